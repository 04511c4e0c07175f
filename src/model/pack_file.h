// A model's packed matrices (Model::repack_shared) kept in a file under a
// directory and mapped shared and read-only, so that every snug process
// running the model with that directory reads the same page-cache pages, as
// it reads the model file's: --repack's faster products without a private
// copy per process, and a restart that packs nothing.
//
// The file: a header (magic "SNUGPACK", format version, the number of
// matrices, the file's size, then the key and the model file's absolute
// path), padded to whole 4 KiB pages, then
// each matrix's packed bytes in order, each at a 64-byte-aligned offset. The
// key holds the model file's identity (device, inode, size, modification
// time), every packed matrix's type, shape and place in the model file, and
// a fingerprint of the bytes the running build's kernels pack a fixed test
// matrix of each type to; a file is taken only when its key is the same,
// byte for byte, so a file made for another model, another version of it or
// another packed layout is never read: it is stale, and rebuilt. The
// contents after the header carry no checksum: the directory must be
// writable only by users whose processes you trust, as a model directory
// must.
//
// A file is written under a temporary name (its space allocated first, so a
// full disk is an error, not a SIGBUS), synced and renamed into place: a
// crash leaves no partial file under the real name. Builders of the same
// file take turns on an advisory lock beside it, so the second waits and then
// maps what the first wrote. A builder then removes the pack files of the
// same model path whose model file has changed since (remove_stale_packs):
// a model updated in place or replaced does not leave its old packed copy
// behind, while a pack file of another snug build (another layout) for the
// same model file stays, for that build.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/mapped_file.h"
#include "base/result.h"

namespace snug::model {

struct PackKey {
  std::vector<uint8_t> bytes;          // what the packed bytes depend on (PackKeyBuilder)
  std::string model_path;              // absolute; in the header, to find stale files by
  std::vector<uint64_t> matrix_bytes;  // each matrix's packed bytes, in file order
  uint64_t header_bytes() const;       // the header with the key, in whole 4 KiB pages
  uint64_t file_bytes() const;         // the whole file: header and matrices
  uint64_t offset(size_t i) const;     // where matrix i starts
};

// The header's bytes for a key of n_types layout fingerprints and n_matrices
// matrices and a model path of path_bytes: what snug plan counts as touched.
uint64_t pack_header_bytes(size_t n_types, size_t n_matrices, size_t path_bytes);

// The absolute path a pack file's header records for the model at `path`.
std::string pack_model_path(const std::string& path);

// Builds a key, its parts in this order: the model file, each packed type's
// layout fingerprint, each matrix.
class PackKeyBuilder {
 public:
  PackKeyBuilder(const FileIdentity& model, std::string model_path);
  // What the kernels packed a fixed test matrix of `type` to (packed bytes).
  void add_layout(uint32_t type, const uint8_t* packed, size_t n);
  void add_matrix(uint32_t type, int64_t rows, int64_t cols, uint64_t row_bytes,
                  uint64_t file_offset, uint64_t packed_bytes);
  PackKey finish() const { return key_; }

 private:
  void add_u64(uint64_t v);
  PackKey key_;
};

// dir/<model file name>.<16 hex digits of a hash of the key>.snugpack
std::string pack_file_path(const std::string& dir, const std::string& model_path,
                           const PackKey& key);

// The pack file at `path` mapped whole, if it is there and carries `key`;
// nullopt when it is missing, or stale (*stale then says why in a few words).
// An error only when the path cannot be examined at all.
Result<std::optional<MappedFile>> open_pack_file(const std::string& path, const PackKey& key,
                                                 std::string* stale);

// Removes the pack files beside `path` (the same directory, named for the
// same model file) whose header records key's model path with another model
// file identity: packed from a version of the model that is gone. Files it
// cannot read as pack files of this format are left alone. Returns how many
// it removed. Call it holding path's PackFileLock.
int remove_stale_packs(const std::string& path, const PackKey& key);

// An exclusive advisory lock on path + ".lock" (created when missing), held
// until destruction: builders of one pack file take turns.
class PackFileLock {
 public:
  static Result<PackFileLock> acquire(const std::string& path);
  PackFileLock(PackFileLock&& o) noexcept;
  PackFileLock& operator=(PackFileLock&&) = delete;
  PackFileLock(const PackFileLock&) = delete;
  ~PackFileLock();

 private:
  PackFileLock() = default;
  int fd_ = -1;
};

// A pack file being written under a temporary name beside `path`, its space
// allocated and its header written; commit() syncs it and renames it to
// `path`. Destroyed uncommitted, it removes the temporary file.
class PackFileWriter {
 public:
  static Result<PackFileWriter> create(const std::string& path, const PackKey& key);
  PackFileWriter(PackFileWriter&& o) noexcept;
  PackFileWriter& operator=(PackFileWriter&&) = delete;
  PackFileWriter(const PackFileWriter&) = delete;
  ~PackFileWriter();

  // Writes n bytes at offset (within the file, past the header).
  Status write(uint64_t offset, const void* data, uint64_t n);
  Status commit();

 private:
  PackFileWriter() = default;
  int fd_ = -1;
  std::string path_, tmp_;
};

}  // namespace snug::model
