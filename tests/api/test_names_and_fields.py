"""Meeting clients where they are: --served-model-name aliases, and `input` / `inputs` on every
route that takes texts."""

from __future__ import annotations

import httpx
import pytest

from m3engine.engine import Engine
from m3engine.errors import InputError
from m3engine.server.names import assign_aliases, public_name
from tests.api.conftest import MakeClient

pytestmark = pytest.mark.anyio


async def test_aliases_route_report_and_list(
    make_client: MakeClient, m3_fake: Engine, reranker_fake: Engine
) -> None:
    reranker = reranker_fake.spec.name
    client = await make_client(
        [m3_fake, reranker_fake], served_model_name=("bge-m3", "m3", f"{reranker}=reranker")
    ).start()
    for name in ("bge-m3", "m3"):
        r = await client.post("/v1/embeddings", json={"input": "hello", "model": name})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "bge-m3"  # the first alias is the reported name
    r = await client.post("/v1/rerank", json={"model": "reranker", "query": "q", "documents": ["d"]})
    assert r.status_code == 200 and r.json()["model"] == "reranker"
    listed = (await client.get("/v1/models")).json()["data"]
    assert [m["id"] for m in listed] == ["bge-m3", "m3", "reranker"]
    assert {m["root"] for m in listed} == {"bge-m3", "reranker"}
    info = (await client.get("/info")).json()
    assert info["server"]["served_model_name"] == ["bge-m3", "m3", f"{reranker}=reranker"]
    assert info["model_id"] == "bge-m3" and info["models"][0]["served_names"] == ["bge-m3", "m3"]
    # aliases replace the plain names, as vLLM's flag does; the error lists served names only
    r = await client.post("/v1/embeddings", json={"input": "x", "model": m3_fake.spec.name})
    assert r.status_code == 404 and r.json()["error"]["type"] == "model_not_served"
    message = r.json()["error"]["message"]
    assert "bge-m3, m3, reranker" in message and "/" not in message.split("model`:")[1]


def test_a_directory_is_shown_by_its_last_component_never_its_path(tmp_path: object) -> None:
    assert public_name("/models/bge-m3-finetuned") == "bge-m3-finetuned"
    assert public_name("./bge-m3") == "bge-m3"
    assert public_name("BAAI/bge-m3") == "BAAI/bge-m3"  # a hub id is a name, not a path
    # no aliases: a model answers to its name and last path component, as before
    assert assign_aliases(["/m/a", "/m/b"], []) == [(), ()]


def test_bad_aliases_are_refused_at_start_with_what_to_do() -> None:
    with pytest.raises(InputError, match="no served model is called 'nope'; served: a, b"):
        assign_aliases(["/m/a", "/m/b"], ["nope=x"])
    with pytest.raises(InputError, match="'x' would name two models"):
        assign_aliases(["/m/a", "/m/b"], ["x", "b=x"])
    with pytest.raises(InputError, match="would name two models"):
        assign_aliases(["/m/a", "/m/b"], ["b"])  # --model's alias taken from another model's name
    with pytest.raises(InputError, match="empty name"):
        assign_aliases(["/m/a"], ["a="])
    assert assign_aliases(["/m/a", "BAAI/b"], ["x", "b=y", "BAAI/b=z"]) == [("x",), ("y", "z")]


TEXT_ROUTES = [
    ("/v1/embeddings", "input"),
    ("/v1/embed_m3", "inputs"),
    ("/embed", "inputs"),
    ("/embed_sparse", "inputs"),
    ("/embed_all", "inputs"),
    ("/tokenize", "inputs"),
    ("/classify", "input"),
    ("/predict", "inputs"),
]


@pytest.fixture
async def three(make_client: MakeClient, m3_fake: Engine, classifier_fake: Engine) -> httpx.AsyncClient:
    return await make_client([m3_fake, classifier_fake]).start()


@pytest.mark.parametrize(("route", "own"), TEXT_ROUTES)
async def test_every_text_route_takes_input_or_inputs(three: httpx.AsyncClient, route: str, own: str) -> None:
    other = "inputs" if own == "input" else "input"
    answers = []
    for name in (own, other):
        r = await three.post(route, json={name: ["hello world", "second"]})
        assert r.status_code == 200, (name, r.text)
        answers.append(r.json())
    if route not in ("/v1/embeddings", "/v1/embed_m3", "/classify"):  # those carry ids or times
        assert answers[0] == answers[1]
    r = await three.post(route, json={"input": ["a"], "inputs": ["a"]})
    assert r.status_code == 422
    body = r.json()
    message = body["error"]["message"] if isinstance(body["error"], dict) else body["error"]
    assert "both `input` and `inputs`" in message
    r = await three.post(route, json={})
    assert r.status_code == 422 and own in str(r.json())  # neither: the route's own name is asked for
