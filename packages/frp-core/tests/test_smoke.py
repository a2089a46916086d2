import httpx


async def test_get_is_forwarded(client: httpx.AsyncClient) -> None:
    r = await client.get("/p/hello?x=1")
    assert r.status_code == 200, r.text
    rec = r.json()
    assert rec["raw_path"] == "/hello"
    assert rec["query_string"] == "x=1"
