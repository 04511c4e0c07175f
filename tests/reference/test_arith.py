"""The identity decision (arith.py) on system-info strings of both kinds of
machine, as llama.cpp prints them, without running either program."""
import arith

# llama-cpp-python 0.3.x on this project's AVX-512 machine and on an AVX2-only one.
AVX512_INFO = (b"CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
               b"AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | LLAMAFILE = 1 | "
               b"OPENMP = 1 | REPACK = 1 | ")
AVX2_INFO = (b"CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
             b"LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | ")
# Older builds print every feature, absent ones as 0.
AVX2_INFO_ZEROS = "AVX = 1 | AVX_VNNI = 0 | AVX2 = 1 | AVX512 = 0 | AVX512_VBMI = 0 | AVX512_VNNI = 0 | FMA = 1"
# A build with one AVX-512 extension listed (the others not).
VNNI_ONLY_INFO = "CPU : AVX2 = 1 | AVX512_VNNI = 1 | "
NO_AVX2_INFO = "CPU : SSE3 = 1 | SSSE3 = 1 | "


def test_features_are_parsed():
    f = arith.llama_features(AVX512_INFO)
    assert f["SSE3"] == "1" and f["AVX2"] == "1" and f["AVX512_VNNI"] == "1"
    assert arith.llama_features(AVX2_INFO_ZEROS)["AVX512"] == "0"


def test_identity_only_with_snug_avx2_and_llama_cpp_avx2():
    assert arith.same_arithmetic("AVX2", AVX2_INFO)
    assert arith.same_arithmetic("AVX2", AVX2_INFO_ZEROS)


def test_avx512_on_either_side_is_different_arithmetic():
    assert not arith.same_arithmetic("AVX2", AVX512_INFO)
    assert not arith.same_arithmetic("AVX2", VNNI_ONLY_INFO)
    assert not arith.same_arithmetic("AVX3", AVX2_INFO)
    assert not arith.same_arithmetic("AVX3_DL", AVX2_INFO)
    assert not arith.same_arithmetic("AVX3", AVX512_INFO)


def test_block_sum_kernels_are_different_arithmetic():
    ggml = {"q4_1": "avx2-int8", "q8_0": "avx2-int8"}
    assert arith.same_arithmetic("AVX2", AVX2_INFO, ggml)
    assert not arith.same_arithmetic("AVX2", AVX2_INFO, {"q4_1": "avx2-blocksum", "q8_0": "avx2-blocksum"})
    assert not arith.same_arithmetic("AVX2", AVX2_INFO, {"q4_1": "avx2-int8", "q8_0": "avx2-blocksum"})
    assert not arith.decide("AVX2", AVX2_INFO, {"q4_1": "avx2-blocksum"}).same


def test_grouped_f32_attention_is_different_arithmetic():
    ggml = {"q4_1": "avx2-int8", "q8_0": "avx2-int8"}
    assert arith.same_arithmetic("AVX2", AVX2_INFO, ggml, "f16-ggml")
    assert arith.same_arithmetic("AVX2", AVX2_INFO, ggml, "avx2-int8")  # q8_0 KV, ggml's flash order
    assert not arith.same_arithmetic("AVX2", AVX2_INFO, ggml, "avx2-f16-heads")
    assert not arith.decide("AVX2", AVX2_INFO, ggml, "avx2-f16-heads").same
    assert not arith.same_arithmetic("AVX2", AVX2_INFO, ggml, "avx2-dequant-heads")


def test_without_avx2_is_different_arithmetic():
    assert not arith.same_arithmetic("SSE4", NO_AVX2_INFO)
    assert not arith.same_arithmetic("AVX2", NO_AVX2_INFO)
    assert not arith.same_arithmetic("EMU128", AVX2_INFO)


def test_the_case_is_named():
    assert arith.decide("AVX2", AVX2_INFO).line() == \
        "same arithmetic (snug AVX2, llama.cpp AVX2): identity asserted"
    assert arith.decide("AVX3", AVX512_INFO).line() == \
        "different arithmetic (snug AVX3, llama.cpp AVX512): identity not asserted, oracle bounds apply"
