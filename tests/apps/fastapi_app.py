"""A small FastAPI service, the upstream of portcullis's [api] end-to-end tests.

Run: python fastapi_app.py PORT. Its routes take path parameters that look like probe words
on purpose (an e-mail `phpmyadmin@example.org`, a file `.env.example`, a slug
`wp-login-guide`). Routes under /_test are for the test itself and are not in the spec
(include_in_schema=False): the test calls them on the app directly, never through the gateway.
"""
import sys

import uvicorn
from fastapi import FastAPI, Request
from pydantic import BaseModel

app = FastAPI(title="portcullis e2e API")
SEEN = []


@app.middleware("http")
async def record(request: Request, call_next):
    # The test's own calls and the gateway's spec fetches are not client traffic.
    if not request.url.path.startswith("/_test/") and request.url.path != "/openapi.json":
        SEEN.append(f"{request.method} {request.url.path}")
    return await call_next(request)


class Item(BaseModel):
    name: str


class Login(BaseModel):
    username: str
    password: str


@app.get("/health")
def health():
    return {"ok": True}


@app.post("/api/v1/login/access-token")
def login(body: Login):
    return {"access_token": "t-" + body.username, "token_type": "bearer"}


@app.get("/api/v1/users/{email}")
def user(email: str):
    return {"email": email}


@app.get("/api/v1/files/{name}")
def file(name: str):
    return {"file": name}


@app.get("/api/v1/articles/{slug}")
def article(slug: str):
    return {"slug": slug}


@app.get("/api/v1/items/")
def items():
    return [{"id": 1, "name": "one"}]


@app.post("/api/v1/items/", status_code=201)
def create_item(item: Item):
    return {"id": 2, "name": item.name}


@app.get("/api/v1/items/{item_id}")
def item(item_id: int):
    return {"id": item_id}


@app.delete("/api/v1/items/{item_id}", status_code=204)
def delete_item(item_id: int):
    return None


@app.get("/_test/seen", include_in_schema=False)
def seen():
    return SEEN


@app.post("/_test/add-beta", include_in_schema=False)
def add_beta():
    """Adds GET /api/v1/beta and drops the cached spec, as a deploy of a new version would."""

    def beta():
        return {"beta": True}

    app.add_api_route("/api/v1/beta", beta, methods=["GET"])
    app.openapi_schema = None
    return {"added": "/api/v1/beta"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
