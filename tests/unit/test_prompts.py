"""lab.measure.prompts: token pool from /tokenize and exact-length synthetic prompts."""
import pytest

from lab.core.errors import ApiError, ConfigError
from lab.measure.prompts import synthetic_prompts, token_pool
from tests.fakes.fake_openai_stream import FakeConfig, FakeServer, free_port


@pytest.fixture(scope="module")
def fake():
    with FakeServer(FakeConfig()) as server:
        yield server


def test_token_pool_unique_ids_without_special_tokens(fake):
    pool = token_pool(fake.base_url, "fake-model")
    assert len(pool) > 50
    assert pool == sorted(set(pool))
    assert 1 not in pool  # the fake's BOS id: add_special_tokens was false


def test_token_pool_sends_bearer_key(fake):
    token_pool(fake.base_url + "/v1", "fake-model", api_key="sk-test")  # /v1 is tolerated
    assert fake.stats.auth_headers[-1] == "Bearer sk-test"


def test_token_pool_unreachable_raises_api_error():
    with pytest.raises(ApiError, match="cannot connect to"):
        token_pool(f"http://127.0.0.1:{free_port()}", "m")


def test_token_pool_http_error_raises_api_error(fake):
    with pytest.raises(ApiError, match="HTTP 404"):
        token_pool(fake.base_url + "/nope", "fake-model")


def test_synthetic_prompts_exact_length_and_from_pool():
    pool = list(range(100, 400))
    prompts = synthetic_prompts(pool, 8, 37, seed=1)
    assert len(prompts) == 8
    assert all(len(p) == 37 for p in prompts)
    assert all(t in set(pool) for p in prompts for t in p)
    assert all(isinstance(t, int) for t in prompts[0])


def test_synthetic_prompts_deterministic_and_distinct():
    pool = list(range(1000))
    a = synthetic_prompts(pool, 16, 64, seed=7)
    assert a == synthetic_prompts(pool, 16, 64, seed=7)
    assert a != synthetic_prompts(pool, 16, 64, seed=8)
    # Different per prompt, down to the first cache block, so the prefix cache does not hit.
    assert len({tuple(p[:16]) for p in a}) == 16


@pytest.mark.parametrize("pool,n,input_len", [([], 1, 4), ([1, 2], 1, 0), ([1, 2], -1, 4)])
def test_synthetic_prompts_bad_input(pool, n, input_len):
    with pytest.raises(ConfigError):
        synthetic_prompts(pool, n, input_len, seed=0)
