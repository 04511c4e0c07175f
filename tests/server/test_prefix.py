"""POST /v1/prefix: the hashes the prefix cache gives a request's full prompt
blocks, for a router that sends each request where its prefix is cached. The
names are the cache's own: after one request, a second with the same prompt is
served with exactly those blocks from the cache; they depend on the API key's
scope (one tenant's names never match another's); chat bodies are rendered
through the template first; and the endpoint takes the API's authentication and
errors. Traffic goes to 127.0.0.1 only."""
import json
import tempfile

import pytest

from snug_server import MODEL, Server

if not MODEL.exists():
    pytest.skip(f"{MODEL} is missing (scripts/fetch-models)", allow_module_level=True)

KEYS = ["sk-prefix-test-one", "sk-prefix-test-two"]
SYSTEM = ("You are a careful assistant for a library. Answer in one sentence, cite the shelf, "
          "and never invent a book that is not in the catalogue. ") * 3


@pytest.fixture(scope="module")
def server():
    with tempfile.NamedTemporaryFile("w", suffix=".keys", delete=False) as f:
        f.write("\n".join(KEYS) + "\n")
    s = Server("--api-key-file", f.name, "--ctx", 1024, "--parallel", 2, "--memory", "1GiB")
    yield s
    assert s.stop() == 0, s.log()


def post(server, path, body, key=KEYS[0]):
    h = {"Authorization": f"Bearer {key}"} if key else {}
    status, _, data = server.request("POST", path, body=body, headers=h)
    return status, json.loads(data)


def test_the_hashes_name_what_the_cache_serves(server):
    body = {"prompt": SYSTEM + "Where is Moby Dick?", "max_tokens": 4, "temperature": 0}
    st, pre = post(server, "/v1/prefix", body)
    assert st == 200, pre
    bt, n = pre["block_tokens"], pre["prompt_tokens"]
    assert len(pre["block_hashes"]) == (n - 1) // bt >= 4
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in pre["block_hashes"])
    st, first = post(server, "/v1/completions", body)
    assert st == 200 and first["usage"]["prompt_tokens"] == n
    st, again = post(server, "/v1/completions", body)
    assert st == 200
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == len(pre["block_hashes"]) * bt
    # The same prompt under another key: other names, nothing shared.
    st, other = post(server, "/v1/prefix", body, key=KEYS[1])
    assert st == 200 and other["prompt_tokens"] == n
    assert not set(other["block_hashes"]) & set(pre["block_hashes"])
    # A longer prompt with the same start: its first names are the same.
    longer = dict(body, prompt=body["prompt"] + " And where is Ulysses, in which edition?" * 4)
    st, more = post(server, "/v1/prefix", longer)
    assert st == 200 and len(more["block_hashes"]) > len(pre["block_hashes"])
    shared = 0
    while shared < len(pre["block_hashes"]) and \
            more["block_hashes"][shared] == pre["block_hashes"][shared]:
        shared += 1
    assert shared >= len(pre["block_hashes"]) - 1  # all but the block the prompts part in


def test_chat_bodies_are_rendered_first(server):
    chat = {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": "Where is Moby Dick?"}], "max_tokens": 4}
    st, pre = post(server, "/v1/prefix", chat)
    assert st == 200
    st, out = post(server, "/v1/chat/completions", dict(chat, temperature=0))
    assert st == 200 and out["usage"]["prompt_tokens"] == pre["prompt_tokens"]
    st, plain = post(server, "/v1/prefix", {"prompt": SYSTEM + "Where is Moby Dick?"})
    assert pre["block_hashes"][:1] != plain["block_hashes"][:1]  # the template's tokens lead


@pytest.mark.parametrize("body, key, status, code", [
    ({"prompt": "hi"}, None, 401, "invalid_api_key"),
    ({"prompt": "hi"}, "sk-wrong-key-000000", 401, "invalid_api_key"),
    ({"prompt": "hi", "model": "nope"}, KEYS[0], 404, "model_not_found"),
    ({"prompt": 7}, KEYS[0], 400, None),
    ({"messages": "hi"}, KEYS[0], 400, None),
    ([1, 2], KEYS[0], 400, None),
])
def test_bad_requests_get_the_apis_errors(server, body, key, status, code):
    st, err = post(server, "/v1/prefix", body, key=key)
    assert st == status, err
    assert "\n" not in err["error"]["message"]
    if code:
        assert err["error"]["code"] == code, err
