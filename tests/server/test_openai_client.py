"""`snug serve` against the `openai` PyPI client, unmodified: completions and
chat, streaming and not, stop strings, usage, logprobs, max_tokens ->
finish_reason "length", and greedy output equal to `snug run --temp 0 -n N`
of the same prompt (chat template for chat, --no-chat for completions)."""
import json
import subprocess

import pytest

from snug_server import MODEL, SNUG, Server, snug_run

openai = pytest.importorskip("openai")

if not MODEL.exists():
    pytest.skip(f"{MODEL} is missing (scripts/fetch-models)", allow_module_level=True)

N = 24
CHAT_PROMPT = "Explain what a lighthouse does in two sentences."
TEXT_PROMPT = "The three primary colors are"


@pytest.fixture(scope="module")
def server():
    s = Server("--ctx", 1024, "--parallel", 4, "--memory", "1GiB", "--model-alias", "smol")
    yield s
    assert s.stop() == 0, s.log()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0)


def chat(client, **kw):
    args = dict(model="smol", messages=[{"role": "user", "content": CHAT_PROMPT}],
                max_tokens=N, temperature=0)
    args.update(kw)
    return client.chat.completions.create(**args)


def test_models(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["smol"]


def test_chat_greedy_equals_snug_run(client):
    r = chat(client)
    expected = snug_run("--temp", 0, "-n", N, "-p", CHAT_PROMPT)
    assert r.choices[0].message.content == expected
    assert r.choices[0].message.role == "assistant"
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-")
    assert r.model == "smol"


def test_completion_greedy_equals_snug_run(client):
    r = client.completions.create(model="smol", prompt=TEXT_PROMPT, max_tokens=N, temperature=0)
    expected = snug_run("--no-chat", "--temp", 0, "-n", N, "-p", TEXT_PROMPT)
    assert r.choices[0].text == expected
    assert r.object == "text_completion" and r.id.startswith("cmpl-")


def test_usage_counts_tokens(client):
    r = chat(client)
    run = json.loads(subprocess.run([SNUG, "run", str(MODEL), "--temp", "0", "-n", str(N), "-p",
                                     CHAT_PROMPT, "--json"], capture_output=True,
                                    check=True).stdout)
    assert r.usage.prompt_tokens == len(run["prompt_token_ids"])
    assert r.usage.completion_tokens == len(run["token_ids"])
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_max_tokens_gives_length(client):
    r = chat(client, max_tokens=3)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 3
    r = client.completions.create(model="smol", prompt=TEXT_PROMPT, max_tokens=2, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2


def test_chat_stream_equals_whole(client):
    whole = chat(client).choices[0].message.content
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    # include_usage: every chunk carries usage null, the last one empty choices and the usage.
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == N
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_completion_stream_equals_whole(client):
    whole = client.completions.create(model="smol", prompt=TEXT_PROMPT, max_tokens=N,
                                      temperature=0).choices[0].text
    chunks = list(client.completions.create(model="smol", prompt=TEXT_PROMPT, max_tokens=N,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == whole
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks)  # not asked for


def test_stop_strings(client):
    full = chat(client).choices[0].message.content
    words = full.split()
    assert len(words) > 4, full
    stop = " " + words[3]
    r = chat(client, stop=[stop, "never appears here"])
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == full[: full.index(stop)]
    streamed = "".join(c.choices[0].delta.content or "" for c in chat(client, stop=stop, stream=True)
                       if c.choices)
    assert streamed == r.choices[0].message.content


def test_chat_logprobs(client):
    r = chat(client, logprobs=True, top_logprobs=3, max_tokens=8)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens == 8
    for e in content:
        assert len(e.top_logprobs) == 3
        # Greedy: the chosen token is the most likely one.
        assert e.top_logprobs[0].token == e.token
        assert e.top_logprobs[0].logprob == pytest.approx(e.logprob)
        assert e.logprob <= 0 and e.top_logprobs[1].logprob <= e.logprob
        assert bytes(e.bytes).decode("utf-8", "replace") == e.token
    assert "".join(bytes(e.bytes).decode("utf-8", "replace") for e in content) == \
        r.choices[0].message.content
    streamed = [e for c in chat(client, logprobs=True, top_logprobs=3, max_tokens=8, stream=True)
                if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert [e.token for e in streamed] == [e.token for e in content]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in content])


def test_completion_logprobs(client):
    r = client.completions.create(model="smol", prompt=TEXT_PROMPT, max_tokens=6, temperature=0,
                                  logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == 0
    assert lp.text_offset == [sum(len(t.encode()) for t in lp.tokens[:i]) for i in range(6)]
    for tok, p, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 2 and max(top, key=top.get) == tok
        assert top[tok] == pytest.approx(p)


def test_seeded_sampling_repeats(client):
    a = chat(client, temperature=0.9, seed=1234).choices[0].message.content
    b = chat(client, temperature=0.9, seed=1234).choices[0].message.content
    assert a == b


def test_repeated_prompt_hits_the_prefix_cache(client):
    system = "You are a helpful assistant who answers questions about lighthouses. " * 8
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
    first = chat(client, messages=msgs, max_tokens=2)
    second = chat(client, messages=msgs, max_tokens=2)
    assert second.usage.prompt_tokens == first.usage.prompt_tokens
    assert second.usage.prompt_tokens_details.cached_tokens >= 64
    assert second.choices[0].message.content == first.choices[0].message.content


def test_next_chat_turn_skips_the_cached_prefix(client):
    system = "You answer in one short sentence about the sea and its lights. " * 4
    turn1 = [{"role": "system", "content": system},
             {"role": "user", "content": "What does a lighthouse do?"}]
    first = chat(client, messages=turn1, max_tokens=12)
    reply = first.choices[0].message.content
    turn2 = turn1 + [{"role": "assistant", "content": reply},
                     {"role": "user", "content": "And who kept them?"}]
    second = chat(client, messages=turn2, max_tokens=4)
    # Every full 16-token block of the first turn's prompt is reused (its
    # blocks were computed as prompt; the reply's, as generated, are not).
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens // 16 * 16 - 16 and cached > 0
    assert cached < second.usage.prompt_tokens


def test_errors_reach_the_client_as_openai_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, temperature=5)
    assert "temperature" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        chat(client, model="gpt-4o")
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, max_tokens=10**9)
    assert "context" in str(e.value)


def _prompts(n, lengths=7):
    """n prompts of mixed lengths: 10 to 10 + 24 * (lengths - 1) tokens."""
    base = ("Lighthouses guide ships along dangerous coasts at night. "
            "Keepers once trimmed the wicks and wound the clockwork. ")
    return [f"Question {i}: " + base * (i % lengths) + "What does a lighthouse do?"
            for i in range(n)]


def _concurrent_equals_alone(client, prompts, max_tokens):
    import concurrent.futures

    def ask(p):
        r = client.completions.create(model="smol", prompt=p, max_tokens=max_tokens, temperature=0,
                                      extra_body={"ignore_eos": True})
        return r.choices[0].text, r.usage.completion_tokens
    alone = [ask(p) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        together = list(pool.map(ask, prompts))
    for i, (a, t) in enumerate(zip(alone, together)):
        assert t == a, f"request {i}: served alone {a!r}, with others {t!r}"


def test_32_streams_equal_each_served_alone(client):
    _concurrent_equals_alone(client, _prompts(32), 8)


def test_preemption_keeps_every_result():
    # A pool of 128 tokens (8 blocks) for 8 sequences of 10 or 34 prompt tokens + 40
    # generated: admitted together on their prompts (--admission prompt), they outgrow
    # the pool and preempted ones are recomputed.
    s = Server("--ctx", 128, "--parallel", 1, "--max-seqs", 8, "--memory", "1GiB",
               "--model-alias", "smol", "--admission", "prompt")
    try:
        c = openai.OpenAI(base_url=s.base_url + "/v1", api_key="unused", max_retries=0)
        _concurrent_equals_alone(c, _prompts(8, lengths=2), 40)
        assert s.metrics()["snug_preemptions_total"] > 0
    finally:
        assert s.stop() == 0, s.log()


def test_reserving_admission_never_preempts():
    # The same requests and pool under the default admission: each waits until its
    # prompt + max_tokens fits beside what the running ones may grow to.
    s = Server("--ctx", 128, "--parallel", 1, "--max-seqs", 8, "--memory", "1GiB",
               "--model-alias", "smol")
    try:
        c = openai.OpenAI(base_url=s.base_url + "/v1", api_key="unused", max_retries=0)
        _concurrent_equals_alone(c, _prompts(8, lengths=2), 40)
        assert s.metrics()["snug_preemptions_total"] == 0
    finally:
        assert s.stop() == 0, s.log()


def test_startup_log_agrees_with_snug_plan(server):
    """The KV pool and workspace the server holds (its ledger, in /metrics) are the bytes
    `snug plan --json` gives for the flags the startup log names, and the log prints them."""
    import re
    log = server.log()
    m = re.search(r"KV pool ([\d.]+) MiB \((\d+) blocks of (\d+) tokens: 4 x 1024 tokens, KV f16\), "
                  r"workspace ([\d.]+) MiB \(as snug plan ([^)]*)\)", log)
    assert m, log
    flags = m.group(5).split()
    assert flags[:4] == ["--ctx", "1024", "--parallel", "4"], flags
    plan = json.loads(subprocess.run([SNUG, "plan", str(MODEL), *flags, "--json"],
                                     capture_output=True, check=True).stdout)
    kv, ws = plan["kv_cache"]["bytes"], plan["workspace"]["bytes"]
    held = server.metrics()
    assert held['snug_memory_bytes{category="kv_cache"}'] == kv
    assert held['snug_memory_bytes{category="scratch"}'] == ws
    assert float(m.group(1)) == round(kv / 2**20, 1) and float(m.group(4)) == round(ws / 2**20, 1)
    assert int(m.group(2)) == plan["kv_cache"]["blocks"]
    assert int(m.group(3)) == plan["kv_cache"]["block_tokens"]
    assert held["snug_kv_blocks_total"] == plan["kv_cache"]["blocks"]
    assert "kernels: " in log
