"""Token-for-token comparison of snug's tokenizers with llama.cpp (llama-cpp-python).

For each real model, >= 300 strings (ASCII, whitespace runs, digits, punctuation,
contractions, emoji and ZWJ sequences, CJK, Arabic, combining marks, invalid UTF-8,
special-token look-alikes, very long words) are tokenized with every combination of
add_special / parse_special by both implementations and must be identical; decode()
must equal llama.cpp's llama_detokenize, and decode(encode(s)) == s for valid UTF-8.

The snug side is tests/text/tokenize_tool (path in $SNUG_TOKENIZE_TOOL); inputs travel
as hex so arbitrary bytes survive JSON.
"""
import ctypes
import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(os.environ.get("SNUG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
MODELS = {
    "smollm2": ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": ROOT / "models" / "gemma-3-270m-q4_k_m.gguf",
}


def corpus():
    """The test strings, as bytes."""
    s = []
    # ASCII prose, punctuation, contractions, code.
    s += ["Hello world", "Hello, world!", "hello", "HELLO", "Hello World.", "a", "A", "ab", "abc",
          "The quick brown fox jumps over the lazy dog.", "It's", "it's", "I'm", "you're", "we've",
          "they'll", "he'd", "don't", "DON'T", "I'M", "Y'ALL", "o'clock", "rock 'n' roll",
          "'s 't 're 've 'm 'll 'd", "''", "'", "\"quoted\"", "(parens) [brackets] {braces}",
          "a.b,c;d:e!f?g", "...", "!!!", "???", "—em dash–en dash-", "@user #tag $5 %20 ^ & * _ + = ~ ` | \\",
          "def f(x):\n    return x + 1\n", "int main() { return 0; }", "for (int i = 0; i < n; ++i) {}",
          "<html><body>Hi</body></html>", "SELECT * FROM t WHERE a = 'b';", "x=1;y=2",
          "https://example.com/path?q=1&r=2#frag", "user@example.com", "C:\\Windows\\System32",
          "snake_case camelCase PascalCase kebab-case SCREAMING_CASE", "e.g. i.e. etc.", "Mr. Smith",
          "Hello\u00a0world", "tab\tseparated\tvalues", "a\\nb", "<>", "</s>", "<s>", "[INST]", "###"]
    # Whitespace: runs, tabs, newlines, CRLF, leading/trailing.
    s += [" ", "  ", "   ", "    ", " " * 17, "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", "\r",
          " \n ", "\n \n", " a", "  a", "   a", "a ", "a  ", " a ", "a  b", "a   b", "a\tb", "a\t\tb",
          "a\nb", "a\n\nb", "a\r\nb", "a \nb", "a\n b", "a \n b", "\ta", "\t a", " \ta", "line1\nline2\nline3",
          "  indented\n    more\n\tTabbed", "trailing spaces   \n", "\n\nleading newlines", "\u3000ideographic",
          "a\u2003em\u2009thin", "\v\f", "x\u2028y\u2029z", "   \n\n   \t\t  \r\n "]
    # Digits and numbers.
    s += ["0", "1", "12", "123", "1234", "12345", "123456789", "1234567890123456789012345678901234567890",
          "3.14159", "-42", "+7", "1,000,000", "1e10", "0x1F", "2024-01-15", "12:30:45", "$1,234.56",
          "100%", "v1.2.3", "a1b2c3", "1st 2nd 3rd 4th", "phone: 555-123-4567", "٣٤٥", "१२३", "½ ¾ ²",
          "Ⅻ", "①②③", "۱۲۳"]
    # Non-Latin scripts, combining marks, emoji.
    s += ["日本語", "日本語のテキストです。", "中文测试，你好世界！", "한국어 텍스트", "ไทย", "Привет, мир!",
          "Ελληνικά", "עברית", "مرحبا بالعالم", "السلام عليكم", "हिन्दी", "বাংলা", "தமிழ்", "ქართული",
          "Հայերեն", "አማርኛ", "café", "cafe\u0301", "naïve", "Zürich", "straße", "ǅ", "e\u0301\u0302\u0303",
          "a\u0300\u0301\u0302\u0303\u0304", "Z\u0351\u0352\u0353a\u0354l\u0355g\u0356o", "ñ", "n\u0303",
          "🎉", "😀", "🎉🎉🎉", "👍🏽", "👨‍👩‍👧‍👦", "👩‍💻", "🏳️‍🌈", "🇺🇸🇯🇵", "❤️", "✨ sparkles ✨", "a😀b",
          "emoji at end 🚀", "🚀 emoji at start", "mixed 日本 and English and 😀", "\u200b zero width",
          "\u200d", "\ufeffBOM", "\ue000 private use", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝟘𝟙𝟚", "\U0001F600\U0001F601",
          "Ａｂｃ full width", "ｶﾀｶﾅ", "\u0000nul", "\x01\x02\x03 controls", "\x7f del"]
    s = [x.encode("utf-8") for x in s]
    # Invalid UTF-8.
    s += [b"\xff", b"\xfe\xff", b"\x80", b"abc\x80def", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82(",
          b"\xf0\x9f\x98", b"\xf0\x9f\x98 x", b"\xc0\x80", b"\xc1\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
          b"\xe0\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80", b"a\xffb\xfec",
          b"\x80\x80\x80", b"\xc3\xa9\xff\xc3\xa9", b"hello \xff world", b"\xf0\x90\x80", b"123\xff456",
          b"\xe6\x97\xa5\xe6\x9c", b" \xff ", b"\xff\n\xff", b"\xc2", b"\xdf\xbf\xbf"]
    # Special-token look-alikes (both models' control and user-defined texts).
    specials = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>", "<empty_output>",
                "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>",
                "<unused0>", "<unused98>", "[multimodal]", "<table>", "</table>", "<h1>", "<start_of_image>",
                "<end_of_image>", "<image_soft_token>"]
    for sp in specials:
        s += [sp.encode(), f"a{sp}b".encode(), f" {sp} ".encode(), f"{sp}{sp}".encode(),
              f"{sp}\nhello".encode()]
    s += [b"<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
          b"<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
          b"<|im_start", b"im_start|>", b"<|im_start|", b"<<|im_end|>>", b"<start_of_turn", b"<|IM_START|>",
          b"<|im_start|><|im_start|>x<|im_end|>", b"text<end_of_turn>text<start_of_turn>text",
          b"\n\n\n\n\n\n", b"\n" * 40, b" " * 40, b"  \n\n  \n\n  ", b"<table><tr><td>1</td></tr></table>"]
    # Long words and long inputs.
    s += [b"a" * 1000, b"ab" * 500, b"x" * 5000, b"1" * 300, b"9" * 1001, b"supercalifragilistic" * 30,
          b" ".join([b"word"] * 300), ("日本" * 300).encode(), ("😀" * 200).encode(), b"!" * 300,
          b"\t" * 100, b"- " * 200, b"ab\n" * 200, (" naïve café" * 100).encode()]
    # Pairwise mixtures for breadth.
    pieces = ["Hi", " there", "123", "日本", "😀", "\n", "  ", "'s", "!", "é", "<|im_end|>", "\t", "ab c"]
    for i, a in enumerate(pieces):
        for b in pieces[i:i + 4]:
            s.append((a + b).encode())
    seen, out = set(), []
    for x in s:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def run_tool(tool, model, requests):
    inp = "".join(json.dumps(r) + "\n" for r in requests)
    proc = subprocess.run([tool, str(model)], input=inp.encode(), capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(requests)
    return [json.loads(line) for line in lines]


def llama_detokenize(llm, ids):
    import llama_cpp
    arr = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
    size = 256 + 64 * len(ids)
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(llm._model.vocab, arr, len(ids), buf, size, False, False)
    assert n >= 0
    return buf.raw[:n]


@pytest.fixture(scope="module")
def tool():
    path = os.environ.get("SNUG_TOKENIZE_TOOL")
    if not path or not Path(path).exists():
        pytest.skip("SNUG_TOKENIZE_TOOL not set or missing (build tokenize_tool)")
    return path


@pytest.mark.parametrize("name", sorted(MODELS))
def test_matches_llama_cpp(tool, name):
    llama_cpp = pytest.importorskip("llama_cpp")
    model = MODELS[name]
    if not model.exists():
        pytest.skip(f"{model} not present")
    llm = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    texts = corpus()
    assert len(texts) >= 300
    requests = [{"hex": t.hex(), "special": sp, "add_special": add}
                for t in texts for sp in (False, True) for add in (False, True)]
    results = run_tool(tool, model, requests)

    mismatches, decode_mismatches, roundtrip_failures, matched = [], [], [], 0
    for req, res in zip(requests, results):
        text = bytes.fromhex(req["hex"])
        assert "error" not in res, res
        ref = llm.tokenize(text, add_bos=req["add_special"], special=req["special"])
        if res["ids"] == ref:
            matched += 1
        else:
            mismatches.append((text[:80], req["special"], req["add_special"], res["ids"][:20], ref[:20]))
        ref_decoded = llama_detokenize(llm, ref)
        if bytes.fromhex(res["decoded_hex"]) != ref_decoded:
            decode_mismatches.append((text[:80], bytes.fromhex(res["decoded_hex"])[:80], ref_decoded[:80]))
        if not req["special"] and not req["add_special"]:
            try:
                text.decode("utf-8")
                valid = True
            except UnicodeDecodeError:
                valid = False
            if valid and bytes.fromhex(res["decoded_hex"]) != text:
                roundtrip_failures.append(text[:80])

    print(f"\n{name}: {len(texts)} strings, {len(requests)} encodings, {matched} identical to llama.cpp")
    assert not mismatches, f"{len(mismatches)} token mismatches, first: {mismatches[:5]}"
    assert not decode_mismatches, f"{len(decode_mismatches)} decode mismatches: {decode_mismatches[:5]}"
    assert not roundtrip_failures, f"decode(encode(s)) != s for: {roundtrip_failures[:5]}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pieces_and_end_of_generation_match(tool, name):
    llama_cpp = pytest.importorskip("llama_cpp")
    model = MODELS[name]
    if not model.exists():
        pytest.skip(f"{model} not present")
    llm = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    ids = list(range(0, min(n_vocab, 400))) + list(range(400, n_vocab, 97))
    info, pieces = run_tool(tool, model, [{"info": True}, {"pieces": ids}])
    assert info["n_vocab"] == n_vocab
    assert info["bos"] == llama_cpp.llama_vocab_bos(vocab)
    assert info["eos"] == llama_cpp.llama_vocab_eos(vocab)
    ref_eog = [i for i in range(n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    assert info["eog"] == ref_eog
    buf = ctypes.create_string_buffer(512)
    for i, got in zip(ids, pieces["pieces_hex"]):
        n = llama_cpp.llama_token_to_piece(vocab, i, buf, 512, 0, True)
        assert bytes.fromhex(got) == buf.raw[:n], f"piece of token {i}"


GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

EDGE_TEMPLATES = [
    "{% for m in messages %}\n  {% if m.role == 'user' %}\n    U: {{ m.content }}\n  {% else %}\n    A: {{ m.content }}\n  {% endif %}\n{% endfor %}\n",
    "{%- for m in messages -%}[{{ loop.index0 }}/{{ loop.length }}{{ '!' if loop.last }}]{{ m['content'] | upper }}{%- endfor %}",
    "{% set ns = namespace(sys='') %}{% for m in messages %}{% if m.role == 'system' %}{% set ns.sys = m.content %}{% endif %}{% endfor %}SYS={{ ns.sys }}\n{{ messages | length }}",
    "{{ messages[1:] | map(attribute='role') | join(',') }} {{ messages | selectattr('role', 'equalto', 'user') | list | length }}",
    "{% for m in messages if m.role != 'system' %}{{ m.content.strip() ~ '|' }}{% endfor %}{{ eos_token }}",
    "{{ messages | tojson }}",
    "  {# comment #}\n{%- if add_generation_prompt %}\n<gen>\n{%- endif %}\n",
]

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hello \n"},
     {"role": "assistant", "content": "Hi there."}, {"role": "user", "content": "日本語 😀 \"quotes\" and\nnewlines"}],
]


def test_chat_templates_match_jinja2(tool):
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(msg):
        raise jinja2.exceptions.TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    templates = EDGE_TEMPLATES + [GEMMA3_TEMPLATE]
    smollm = MODELS["smollm2"]
    if smollm.exists():
        import gguf_fast
        reader = gguf_fast.Reader(str(smollm))
        field = reader.fields["tokenizer.chat_template"]
        templates.append(bytes(field.parts[field.data[0]]).decode())
    requests, expected = [], []
    for tmpl in templates:
        for conv in CONVERSATIONS:
            for agp in (False, True):
                requests.append({"chat": tmpl, "messages": conv, "add_generation_prompt": agp,
                                 "bos_token": "<bos>", "eos_token": "<eos>"})
                expected.append(env.from_string(tmpl).render(messages=conv, add_generation_prompt=agp,
                                                             bos_token="<bos>", eos_token="<eos>"))
    model = smollm if smollm.exists() else MODELS["gemma3"]
    if not model.exists():
        pytest.skip("no model to start tokenize_tool with")
    results = run_tool(tool, model, requests)
    for req, res, exp in zip(requests, results, expected):
        assert res.get("rendered") == exp, (req["chat"][:80], res, exp)
