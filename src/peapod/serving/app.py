"""The FastAPI service: ``POST /recommend``, ``POST /rank``, ``POST /explain``, ``GET /health``.

Build it with :func:`create_app` around a loaded :class:`peapod.api.Recommender` and run it with
uvicorn (``peapod serve --checkpoint DIR`` does both). Requests are validated twice: by the
pydantic models (shapes and bounds, visible in the OpenAPI schema) and against the loaded run
(known user and item ids, ``k`` within the catalogue) before they are queued, so bad input gets a
4xx answer with a JSON ``{"error": ..., "detail": ...}`` body and never reaches the model.
Concurrent requests of one endpoint are merged into one batched model call by
:class:`peapod.serving.batching.MicroBatcher`.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, AsyncIterator, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ..api import MAX_CANDIDATES, MAX_HISTORY, MAX_K, Query
from ..errors import PeapodError, UnknownIdError
from .batching import MicroBatcher

if TYPE_CHECKING:  # pragma: no cover
    from ..api import Explanation, RankResult, Recommendation, Recommender

log = logging.getLogger(__name__)

#: An id as the run spells it (P5 ids are decimal strings such as "17").
Id = Annotated[str, StringConstraints(min_length=1, max_length=64)]


# ---------------------------------------------------------------------------------------------- schemas
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _UserOrHistory(_Strict):
    """Who the request is for: a known ``user`` id, or a cold-start ``history`` of item ids."""

    user: Id | None = Field(default=None, description="A user id of the training data.")
    history: list[Id] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_HISTORY,
        description="Item ids a new (cold-start) user interacted with, oldest first; used instead of user.",
    )

    @model_validator(mode="after")
    def _one_of_user_or_history(self) -> "_UserOrHistory":
        if (self.user is None) == (self.history is None):
            raise ValueError("give exactly one of 'user' or 'history'")
        return self

    @property
    def query(self) -> Query:
        return self.user if self.user is not None else list(self.history or [])


class RecommendRequest(_UserOrHistory):
    """Next-item recommendation (the sequential task) for a known or a cold-start user."""

    k: int = Field(default=10, ge=1, le=MAX_K, description="How many items to return.")
    exclude_history: bool = Field(default=False, description="Never return items of the user's history.")


class RankRequest(_UserOrHistory):
    """Rank candidate items for a user by the exact log-likelihood of each candidate."""

    candidates: list[Id] = Field(
        min_length=1,
        max_length=MAX_CANDIDATES,
        description="Item ids to rank (distinct).",
        json_schema_extra={"uniqueItems": True},
    )

    @model_validator(mode="after")
    def _check_candidates(self) -> "RankRequest":
        if len(set(self.candidates)) != len(self.candidates):
            raise ValueError("candidates must be distinct")
        return self


class ExplainRequest(_UserOrHistory):
    """Generate a sentence explaining why ``item`` suits the user."""

    item: Id = Field(description="The item to explain.")


class ScoredItem(BaseModel):
    item: str
    score: float = Field(description="Log-probability of the item id under the model.")
    rank: int = Field(ge=1)


class RecommendResponse(BaseModel):
    user: str | None = Field(description="The user id, or null for a cold-start history.")
    items: list[ScoredItem]


class RankResponse(BaseModel):
    user: str | None
    items: list[ScoredItem] = Field(description="The candidates, best first.")


class ExplainResponse(BaseModel):
    user: str | None
    item: str
    explanation: str
    score: float | None = Field(default=None, description="Beam score of the sentence (mean log-prob).")
    num_beams: int
    min_length: int
    max_new_tokens: int


class HealthResponse(BaseModel):
    status: str
    model: dict[str, Any]
    batching: dict[str, dict[str, float]]


class ErrorResponse(BaseModel):
    error: str = Field(description="What went wrong, in one sentence.")
    detail: Any = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "A value out of range (e.g. k larger than the catalogue)."},
    404: {"model": ErrorResponse, "description": "An unknown user or item id."},
    422: {"model": ErrorResponse, "description": "The request body does not match the schema."},
}


# ---------------------------------------------------------------------------------------------- results
def _scored(recs: Sequence["Recommendation"]) -> list[ScoredItem]:
    return [ScoredItem(item=r.item, score=r.score, rank=r.rank) for r in recs]


def _user_of(query: Query) -> str | None:
    return query if isinstance(query, str) else None


# ---------------------------------------------------------------------------------------------- app
def create_app(recommender: "Recommender", max_batch: int = 16, max_wait_ms: float = 5.0) -> FastAPI:
    """A FastAPI app serving ``recommender``; concurrent requests are batched (``max_batch``, ``max_wait_ms``)."""
    executor = ThreadPoolExecutor(1, thread_name_prefix="peapod-model")  # one model call at a time

    def run_recommend(reqs: list[RecommendRequest]) -> list[list["Recommendation"]]:
        out: list[list[Recommendation] | None] = [None] * len(reqs)
        groups: dict[tuple[int, bool], list[int]] = {}
        for i, r in enumerate(reqs):  # one model call per distinct (k, exclude_history)
            groups.setdefault((r.k, r.exclude_history), []).append(i)
        for (k, exclude), idx in groups.items():
            results = recommender.recommend_batch([reqs[i].query for i in idx], k=k, exclude_history=exclude)
            for i, res in zip(idx, results):
                out[i] = res
        return out  # type: ignore[return-value]

    def run_rank(reqs: list[RankRequest]) -> list["RankResult"]:
        return recommender.rank_batch([r.query for r in reqs], [r.candidates for r in reqs])

    def run_explain(reqs: list[ExplainRequest]) -> list["Explanation"]:
        return recommender.explain_batch([r.query for r in reqs], [r.item for r in reqs])

    batchers = {
        "recommend": MicroBatcher(run_recommend, max_batch, max_wait_ms, executor, name="recommend"),
        "rank": MicroBatcher(run_rank, max_batch, max_wait_ms, executor, name="rank"),
        "explain": MicroBatcher(run_explain, max_batch, max_wait_ms, executor, name="explain"),
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        for b in batchers.values():
            await b.aclose()
        executor.shutdown(wait=False)

    app = FastAPI(
        title="peapod",
        version=_version(),
        description="Generative recommendation with personalized prompt distillation (PeaPOD).",
        lifespan=lifespan,
    )
    app.state.recommender = recommender
    app.state.batchers = batchers

    # -------------------------------------------------------------------------- error handlers
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"] if p != "body")
        message = f"{where}: {first['msg']}" if where else first["msg"]
        return JSONResponse(status_code=422, content={"error": message, "detail": errors})

    @app.exception_handler(UnknownIdError)
    async def _unknown(request: Request, exc: UnknownIdError) -> JSONResponse:
        return JSONResponse(status_code=404, content={"error": str(exc)})

    @app.exception_handler(PeapodError)
    async def _peapod(request: Request, exc: PeapodError) -> JSONResponse:
        return JSONResponse(status_code=400, content={"error": str(exc)})

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - a bug
        log.exception("internal error on %s", request.url.path)
        return JSONResponse(status_code=500, content={"error": f"internal error: {type(exc).__name__}"})

    # -------------------------------------------------------------------------- routes
    @app.get("/health", response_model=HealthResponse)
    async def health() -> HealthResponse:
        """Liveness and what is loaded (run, sizes, device) with the batching counters."""
        stats = {
            name: {
                "requests": b.stats.requests,
                "batches": b.stats.batches,
                "mean_batch": round(b.stats.mean_batch, 3),
                "max_batch_seen": b.stats.max_batch_seen,
            }
            for name, b in batchers.items()
        }
        return HealthResponse(status="ok", model=recommender.info(), batching=stats)

    @app.post("/recommend", response_model=RecommendResponse, responses=_ERRORS)
    async def recommend(req: RecommendRequest) -> RecommendResponse:
        """Top-``k`` next items for a user (constrained beam search over the item ids)."""
        recommender.check(req.query, k=req.k, exclude_history=req.exclude_history)
        recs = await batchers["recommend"].submit(req)
        return RecommendResponse(user=_user_of(req.query), items=_scored(recs))

    @app.post("/rank", response_model=RankResponse, responses=_ERRORS)
    async def rank(req: RankRequest) -> RankResponse:
        """The candidates ordered by their exact log-likelihood for the user (top-n task)."""
        recommender.check(req.query, items=req.candidates)
        result = await batchers["rank"].submit(req)
        return RankResponse(user=_user_of(req.query), items=_scored(result.items))

    @app.post("/explain", response_model=ExplainResponse, responses=_ERRORS)
    async def explain(req: ExplainRequest) -> ExplainResponse:
        """A generated explanation of ``item`` for the user (beam settings from the run's config)."""
        recommender.check(req.query, items=[req.item])
        e = await batchers["explain"].submit(req)
        return ExplainResponse(
            user=_user_of(req.query),
            item=e.item,
            explanation=e.text,
            score=e.score,
            num_beams=e.num_beams,
            min_length=e.min_length,
            max_new_tokens=e.max_new_tokens,
        )

    return app


def _version() -> str:
    from .. import __version__

    return __version__
