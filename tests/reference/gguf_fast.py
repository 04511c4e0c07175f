"""gguf.GGUFReader without its cost on large vocabularies.

The gguf package's reader makes a NumPy view for every element of every
metadata array: 5.8 s for SmolLM2's 49k-token vocabulary and 23 s for Gemma 3's
262k, on each open, which made the reference tests spend most of their time
(and under CI's parallel load, past their timeouts) parsing headers. This
reader walks arrays with plain integer reads and decodes an array's elements
only when its contents() is asked for. Tensors, scalar fields, parts and
data_offset are the package's own, unchanged.
"""
import struct

import numpy as np
from gguf import GGUFReader, GGUFValueType
from gguf.gguf_reader import ReaderField

_SCALAR = {
    GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h", GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?", GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d",
}


class ArrayField(ReaderField):
    """A metadata array kept as its raw bytes (parts: item type, count, bytes);
    contents() decodes it on demand, as ReaderField.contents() would."""
    __slots__ = ()

    def contents(self, index_or_slice=slice(None)):
        raw = bytes(self.parts[-1])
        items = _decode(raw, self.types[-1], int(self.parts[1][0]))
        return items[index_or_slice]


def _decode(raw, itype, count):
    if itype == GGUFValueType.STRING:
        out, pos = [], 0
        for _ in range(count):
            n = int.from_bytes(raw[pos:pos + 8], "little")
            out.append(raw[pos + 8:pos + 8 + n].decode("utf-8"))
            pos += 8 + n
        return out
    fmt = _SCALAR.get(itype)
    if fmt is None:
        raise ValueError(f"nested metadata arrays are not read here ({itype.name})")
    return [v[0] for v in struct.iter_unpack(fmt, raw)]


class Reader(GGUFReader):
    def _array_size(self, offs, itype, count):
        if itype == GGUFValueType.STRING:
            mm, pos = memoryview(self.data), offs
            for _ in range(count):
                pos += 8 + int.from_bytes(mm[pos:pos + 8], "little")
            return pos - offs
        fmt = _SCALAR.get(itype)
        if fmt is None:
            raise ValueError(f"nested metadata arrays are not read here ({itype.name})")
        return struct.calcsize(fmt) * count

    def _build_fields(self, offs, count):
        for _ in range(count):
            orig_offs = offs
            kv_klen, kv_kdata = self._get_str(offs)
            offs += int(kv_klen.nbytes + kv_kdata.nbytes)
            raw_kv_type = self._get(offs, np.uint32)
            offs += int(raw_kv_type.nbytes)
            name = str(bytes(kv_kdata), encoding="utf-8")
            if GGUFValueType(raw_kv_type[0]) != GGUFValueType.ARRAY:
                size, parts, idxs, types = self._get_field_parts(offs, raw_kv_type[0])
                self._push_field(ReaderField(orig_offs, name, [kv_klen, kv_kdata, raw_kv_type, *parts],
                                             [i + 3 for i in idxs], types), skip_sum=True)
                offs += size
                continue
            raw_itype = self._get(offs, np.uint32)
            alen = self._get(offs + 4, np.uint64)
            itype = GGUFValueType(raw_itype[0])
            start = offs + 12
            size = self._array_size(start, itype, int(alen[0]))
            self._push_field(ArrayField(orig_offs, name, [raw_itype, alen, self.data[start:start + size]],
                                        [], [GGUFValueType.ARRAY, itype]), skip_sum=True)
            offs = start + size
        return offs
