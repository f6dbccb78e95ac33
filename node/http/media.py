"""Video routes: transcode jobs, and the rendition sets they published."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from node.errors import Busy, InvalidLadder, JobFinished, NotHeld, OperatorOnly, Unauthenticated, UnknownJob
from node.http.context import NodeContext
from node.http.errors import documented
from node.http.models import RequestBody, iso
from node.media.ladder import MAX_HEIGHT, MAX_KBPS, MIN_HEIGHT, MIN_KBPS, PRESETS, ladder_from_request
from overlay_client.uhrp import parse_content_id
from protocols.errors import InvalidUhrpUrl
from protocols.playlists import PlaylistError, data_path

if TYPE_CHECKING:
    from node.services.transcode import Job
    from storage.metadata import RenditionRow

__all__ = ["media_router"]


class RungIn(RequestBody):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,16}$", examples=["720p"])
    height: int = Field(ge=MIN_HEIGHT, le=MAX_HEIGHT, examples=[720])
    videoKbps: int = Field(ge=MIN_KBPS, le=MAX_KBPS, examples=[2800])


class TranscodeIn(RequestBody):
    """A ladder preset by name, or explicit rungs; neither: ``media.ladder``."""

    preset: Literal["default", "seed"] | None = Field(default=None, description=", ".join(PRESETS))
    rungs: list[RungIn] | None = None


class RungOut(BaseModel):
    name: str
    height: int
    videoKbps: int


class JobOut(BaseModel):
    jobId: str
    sourceHash: str
    status: Literal["queued", "running", "done", "failed", "cancelled"]
    progress: float = Field(description="0..1")
    error: str | None
    rungs: list[RungOut] = Field(description="as asked; those above the source's height are left out when it runs")
    hls: str | None = Field(description="the master playlist's URL path, when done")
    dash: str | None = Field(description="the MPD's URL path, when done")
    createdAt: str | None
    updatedAt: str | None


class JobList(BaseModel):
    jobs: list[JobOut]


class RenditionOut(RungOut):
    bandwidth: int = Field(description="bits/s a player needs: video and the shared audio")
    playlist: str = Field(description="the media playlist's URL path (video only)")
    master: str = Field(description="a master playlist of this rendition alone, with the audio: a fixed quality")


class RenditionSetOut(BaseModel):
    masterHash: str = Field(description="names the whole set")
    hls: str
    dash: str
    renditions: list[RenditionOut]
    createdAt: str | None


class RenditionSetList(BaseModel):
    sourceHash: str
    sets: list[RenditionSetOut] = Field(description="newest first")


def job_out(job: Job) -> JobOut:
    return JobOut(
        jobId=job.job_id,
        sourceHash=job.source_hash.hex(),
        status=job.status,  # type: ignore[arg-type]
        progress=job.progress,
        error=job.error,
        rungs=[RungOut(name=r.name, height=r.height, videoKbps=r.video_kbps) for r in job.rungs],
        hls=data_path(job.master_hash, ".m3u8") if job.master_hash else None,
        dash=data_path(job.mpd_hash, ".mpd") if job.mpd_hash else None,
        createdAt=iso(job.created_at),
        updatedAt=iso(job.updated_at),
    )


def set_out(row: RenditionRow) -> RenditionSetOut:
    return RenditionSetOut(
        masterHash=row.master_hash,
        hls=data_path(bytes.fromhex(row.master_hash), ".m3u8"),
        dash=data_path(bytes.fromhex(row.mpd_hash), ".mpd"),
        renditions=[
            RenditionOut(
                name=r["name"],
                height=r["height"],
                videoKbps=r["videoKbps"],
                bandwidth=r["bandwidth"],
                playlist=data_path(bytes.fromhex(r["playlist"]), ".m3u8"),
                master=data_path(bytes.fromhex(r["master"]), ".m3u8"),
            )
            for r in json.loads(row.renditions)
        ],
        createdAt=iso(row.created_at),
    )


def media_router(ctx: NodeContext) -> APIRouter:
    router = APIRouter(tags=["video"])

    @router.post(
        "/v1/content/{contentId}/transcode",
        status_code=202,
        response_model=JobOut,
        summary="Transcode held video into an adaptive HLS and DASH ladder (a job)",
        responses=documented(InvalidUhrpUrl, InvalidLadder, Unauthenticated, OperatorOnly, NotHeld, Busy),
    )
    async def transcode(contentId: str, request: Request, body: TranscodeIn | None = None) -> JobOut:
        ctx.require_operator(request.scope, "transcode content")
        digest = parse_content_id(contentId)
        body = body or TranscodeIn()
        explicit = [(r.name, r.height, r.videoKbps) for r in body.rungs] if body.rungs is not None else None
        rungs = ladder_from_request(body.preset, explicit, ctx.settings.media.ladder)
        return job_out(await ctx.transcode.submit(digest, rungs))

    @router.get("/v1/jobs", response_model=JobList, summary="Transcode jobs, newest first",
                responses=documented(Unauthenticated, OperatorOnly))  # fmt: skip
    async def jobs(request: Request) -> JobList:
        ctx.require_operator(request.scope, "see transcode jobs")
        return JobList(jobs=[job_out(j) for j in ctx.transcode.jobs()])

    @router.get("/v1/jobs/{jobId}", response_model=JobOut, summary="One transcode job: status and progress",
                responses=documented(Unauthenticated, OperatorOnly, UnknownJob))  # fmt: skip
    async def job(jobId: str, request: Request) -> JobOut:
        ctx.require_operator(request.scope, "see transcode jobs")
        return job_out(ctx.transcode.get(jobId))

    @router.delete("/v1/jobs/{jobId}", response_model=JobOut, summary="Cancel a transcode job (ffmpeg is stopped)",
                   responses=documented(Unauthenticated, OperatorOnly, UnknownJob, JobFinished))  # fmt: skip
    async def cancel(jobId: str, request: Request) -> JobOut:
        ctx.require_operator(request.scope, "cancel transcode jobs")
        return job_out(await ctx.transcode.cancel(jobId))

    @router.get(
        "/v1/content/{contentId}/renditions",
        response_model=RenditionSetList,
        summary="The adaptive rendition sets published from a source",
        responses=documented(InvalidUhrpUrl),
    )
    async def renditions(contentId: str) -> RenditionSetList:
        digest = parse_content_id(contentId)
        sets = [set_out(row) for row in await ctx.transcode.renditions_of(digest)]
        return RenditionSetList(sourceHash=digest.hex(), sets=sets)

    @router.post(
        "/v1/renditions/{masterHash}/pin",
        response_model=RenditionSetOut,
        summary="Hold and pin a whole rendition set by its master playlist's hash (fetched from the overlay)",
        responses=documented(InvalidUhrpUrl, Unauthenticated, OperatorOnly, NotHeld, PlaylistError),
    )
    async def pin_set(masterHash: str, request: Request) -> RenditionSetOut:
        ctx.require_operator(request.scope, "pin content")
        return set_out(await ctx.transcode.pin_set(parse_content_id(masterHash)))

    return router
