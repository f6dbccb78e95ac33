"""Transcode jobs: a held video in, a published adaptive ladder out.

A job runs in stages: the source content is written to a work directory
(ffmpeg seeks in MP4s, so it needs a file), probed, encoded in one ffmpeg
pass (``node.media.ladder``), validated (``node.media.validate``) and
published as content (``node.media.publish``); the work directory is removed
whatever happens. Progress is the encode's share of the source's duration
(the last 10% are validation and publishing).

Jobs are kept in the metadata store, so they survive a restart: one that
was running when the node stopped is queued again from the start (its
ffmpeg died with the node; nothing of it was published). At most
``media.max_jobs`` run at once and ``media.max_queued_jobs`` wait; past that
a submit is refused with ``Busy``. Cancelling a job cancels its task, which
kills ffmpeg (``node.media.tools``) and undoes a publish in progress.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from config import MediaConfig
from node.errors import Busy, JobFinished, NotHeld, UnknownJob
from node.media.ladder import AUDIO_KBPS, SOURCE_INPUT_OPTIONS, LadderError, Rung, choose_rungs, ladder_args
from node.media.publish import RenditionSet, publish
from node.media.tools import MediaToolError, probe_source, run_ffmpeg
from node.media.validate import InvalidRendition, master_entries, validate_output
from protocols.manifest import Manifest
from protocols.playlists import (
    MAX_PLAYLIST_BYTES,
    MPD_DATA_ID,
    RENDITION_DATA_ID,
    SOURCE_DATA_ID,
    PlaylistError,
    hash_of_path,
    hls_references,
    mpd_references,
    session_data,
)
from storage import ContentStore, StorageError
from storage.metadata import JobRow, RenditionRow

__all__ = ["TranscodeService", "Job"]

log = logging.getLogger("overlay_node.transcode")

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)
_ENCODE_SHARE = 0.9  # of the progress bar; validation and publishing take the rest
_PROGRESS_SAVE_S = 2.0  # progress reaches the database at most this often
_SET_FETCHES = 4  # segments of a rendition set fetched at once
_KEEP_FINISHED = 1000  # finished jobs remembered in memory (the database keeps them too)


@dataclass(frozen=True)
class Job:
    job_id: str
    source_hash: bytes
    rungs: tuple[Rung, ...]
    status: str = QUEUED
    progress: float = 0.0
    error: str | None = None
    master_hash: bytes | None = None
    mpd_hash: bytes | None = None
    created_at: float = 0.0
    updated_at: float = 0.0

    def row(self) -> JobRow:
        return JobRow(
            self.job_id,
            self.source_hash.hex(),
            json.dumps([_rung_json(r) for r in self.rungs]),
            self.status,
            self.progress,
            self.error,
            self.master_hash.hex() if self.master_hash else None,
            self.mpd_hash.hex() if self.mpd_hash else None,
            self.created_at,
            self.updated_at,
        )

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        return cls(
            row.job_id,
            bytes.fromhex(row.source_hash),
            tuple(Rung(r["name"], r["height"], r["videoKbps"]) for r in json.loads(row.rungs)),
            row.status,
            row.progress,
            row.error,
            bytes.fromhex(row.master_hash) if row.master_hash else None,
            bytes.fromhex(row.mpd_hash) if row.mpd_hash else None,
            row.created_at,
            row.updated_at,
        )


def _rung_json(rung: Rung) -> dict[str, object]:
    return {"name": rung.name, "height": rung.height, "videoKbps": rung.video_kbps}


def _rendition_json(
    name: str, height: int, video_kbps: int, bandwidth: int, playlist: bytes, master: bytes
) -> dict[str, object]:
    """One rendition of a published set, as ``renditions.renditions`` stores it."""
    return {
        "name": name,
        "height": height,
        "videoKbps": video_kbps,
        "bandwidth": bandwidth,
        "playlist": playlist.hex(),
        "master": master.hex(),
    }


class TranscodeService:
    def __init__(
        self,
        content: ContentStore,
        config: MediaConfig,
        work_dir: Path,
        *,
        announce: Callable[[Manifest], None],
        fetch: Callable[[bytes], Awaitable[Manifest]] | None = None,
        clock: Callable[[], float],
    ) -> None:
        self.content = content
        self.fetch = fetch  # the overlay's download of content this node lacks (None off an overlay)
        self.config = config
        self.work_dir = work_dir
        self.announce = announce
        self.clock = clock
        self._jobs: dict[str, Job] = {}  # insertion order: oldest first
        self._running: dict[str, tuple[trio.CancelScope, trio.Event]] = {}  # the scope; set once recorded ended
        self._queue_send, self._queue = trio.open_memory_channel[str](config.max_queued_jobs)
        self._waiting = 0

    # -- what the API asks -----------------------------------------------------

    def jobs(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda j: (-j.created_at, j.job_id))

    def get(self, job_id: str) -> Job:
        try:
            return self._jobs[job_id]
        except KeyError:
            raise UnknownJob(f"no transcode job {job_id!r}") from None

    async def submit(self, source_hash: bytes, rungs: tuple[Rung, ...]) -> Job:
        if await self.content.get(source_hash) is None:
            raise NotHeld(f"content {source_hash.hex()} is not held by this node")
        if self._waiting >= self.config.max_queued_jobs:
            raise Busy(f"{self._waiting} transcode jobs are waiting already; try again later")
        now = self.clock()
        job = Job(str(uuid.uuid4()), source_hash, rungs, created_at=now, updated_at=now)
        await self._save(job)
        self._enqueue(job.job_id)
        return job

    async def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.status in FINISHED:
            raise JobFinished(f"job {job_id} has ended ({job.status})")
        if (running := self._running.get(job_id)) is not None:
            scope, ended = running
            scope.cancel()  # the runner records the cancellation once ffmpeg is gone
            with trio.move_on_after(10):
                await ended.wait()
            return self._jobs[job_id]
        return await self._finish(job, CANCELLED, None)

    async def renditions_of(self, source_hash: bytes) -> list[RenditionRow]:
        return await self.content.meta.renditions_of(source_hash)

    async def pin_set(self, master_hash: bytes) -> RenditionRow:
        """Hold and pin a whole rendition set by its master playlist's hash,
        fetching from the overlay what this node lacks, and record it against
        its source. Playlists are followed (a set is a Merkle DAG); segments
        are fetched a few at a time. Nothing is pinned unless all of it is
        held (what was fetched before a failure stays as cache)."""
        members: list[bytes] = []  # every object of the set, pinned at the end

        async def hold(digest: bytes, *, read: bool = True) -> bytes:
            members.append(digest)
            return await self._hold(digest, read=read)

        master = await hold(master_hash)
        entries = session_data(master)
        mpd_hash = hash_of_path(entries.get(MPD_DATA_ID, ""))
        source = entries.get(SOURCE_DATA_ID, "")
        if not re.fullmatch(r"[0-9a-f]{64}", source):
            raise PlaylistError("not a rendition set's master playlist: it names no source content")
        try:
            variants, audio = master_entries(master.decode())
        except InvalidRendition as exc:
            raise PlaylistError(f"not a rendition set's master playlist: {exc}") from None
        one_variant: dict[int, bytes] = {}  # height -> the master of that rendition alone
        for _, height, _ in variants:
            one_variant[height] = hash_of_path(entries.get(f"{RENDITION_DATA_ID}{height}", ""))
            await hold(one_variant[height], read=False)
        playlists = {v.uri: await hold(hash_of_path(v.uri)) for v in variants}
        playlists |= {uri: await hold(hash_of_path(uri)) for uri in audio}
        segments = {hash_of_path(ref) for text in playlists.values() for ref in hls_references(text)}
        segments |= {hash_of_path(ref) for ref in mpd_references(await hold(mpd_hash))}
        failures: list[Exception] = []
        room = trio.Semaphore(_SET_FETCHES)

        async def one(digest: bytes) -> None:
            async with room:
                try:
                    await hold(digest, read=False)
                except Exception as exc:  # the first failure is the answer; the rest stop
                    failures.append(exc)
                    nursery.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            for digest in sorted(segments):
                nursery.start_soon(one, digest)
        if failures:
            raise failures[0]
        for digest in members:
            record = await self.content.get(digest)
            if record is not None and not record.pinned and await self.content.set_pinned(digest, True):
                self.announce(record.manifest)
        renditions = [
            _rendition_json(
                f"{v.height}p",
                v.height,
                max(0, v.bandwidth // 1000 - AUDIO_KBPS),
                v.bandwidth,
                hash_of_path(v.uri),
                one_variant[v.height],
            )
            for v in sorted(variants, key=lambda v: v.height)
        ]
        row = RenditionRow(master_hash.hex(), source, mpd_hash.hex(), json.dumps(renditions), self.clock())
        await self.content.meta.put_rendition(row)
        return row

    async def _hold(self, digest: bytes, *, read: bool) -> bytes:
        """Make sure ``digest`` is held (fetched from the overlay if need be);
        its bytes when ``read`` (a playlist: bounded)."""
        record = await self.content.get(digest)
        if record is None:
            if self.fetch is None:
                raise NotHeld(f"content {digest.hex()} is not held by this node, and it is on no overlay")
            await self.fetch(digest)
            record = await self.content.get(digest)
            if record is None:
                raise NotHeld(f"content {digest.hex()} was deleted as it arrived")
        if not read:
            return b""
        if record.manifest.size > MAX_PLAYLIST_BYTES:
            raise PlaylistError(f"{digest.hex()} is {record.manifest.size} bytes: too large for a playlist")
        async with contextlib.aclosing(self.content.read(record.manifest, 0, record.manifest.size, 1 << 20)) as pieces:
            return b"".join([bytes(p) async for p in pieces])

    # -- running -----------------------------------------------------------------

    def _enqueue(self, job_id: str) -> None:
        self._queue_send.send_nowait(job_id)  # bounded by the _waiting check
        self._waiting += 1

    async def load(self) -> None:
        """Before ``run``: the jobs of earlier runs; those cut short are queued again."""
        for row in reversed(await self.content.meta.jobs(limit=_KEEP_FINISHED)):
            job = Job.from_row(row)
            if job.status == RUNNING:
                job = replace(job, status=QUEUED, progress=0.0, updated_at=self.clock())
                await self._save(job)
                log.info("transcode job %s was running when the node stopped; queued again", job.job_id)
            self._jobs[job.job_id] = job
            if job.status == QUEUED and self._waiting < self.config.max_queued_jobs:
                self._enqueue(job.job_id)
            elif job.status == QUEUED:
                await self._finish(job, FAILED, "the queue was full when the node restarted")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await trio.to_thread.run_sync(shutil.rmtree, self.work_dir, True)  # leftovers of a crash
        slots = trio.Semaphore(self.config.max_jobs)
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for job_id in self._queue:
                self._waiting -= 1
                await slots.acquire()
                nursery.start_soon(self._run_job, job_id, slots)

    async def _run_job(self, job_id: str, slots: trio.Semaphore) -> None:
        ended = trio.Event()
        try:
            job = self._jobs[job_id]
            if job.status != QUEUED:
                return  # cancelled while it waited
            work = self.work_dir / job_id
            with trio.CancelScope() as scope:
                self._running[job_id] = (scope, ended)  # before the job shows as running: a cancel always finds it
                try:
                    job = await self._update(job, status=RUNNING, progress=0.0)
                    result = await self._transcode(job, work)
                except (MediaToolError, InvalidRendition, PlaylistError, LadderError, StorageError, OSError) as exc:
                    log.info("transcode job %s failed: %s", job_id, exc)
                    await self._finish(self._jobs[job_id], FAILED, str(exc))
                    return
                except Exception as exc:  # a bug must fail its job, not stop the node
                    log.exception("transcode job %s failed unexpectedly", job_id)
                    await self._finish(self._jobs[job_id], FAILED, f"internal error: {exc!r}")
                    return
                finally:
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(shutil.rmtree, work, True)
                await self._finish(self._jobs[job_id], DONE, None, result)
            if scope.cancelled_caught:
                await self._finish(self._jobs[job_id], CANCELLED, None)
        finally:
            self._running.pop(job_id, None)
            ended.set()
            slots.release()

    async def _transcode(self, job: Job, work: Path) -> RenditionSet:
        record = await self.content.get(job.source_hash)
        if record is None:
            raise MediaToolError("the source content was deleted")
        await trio.Path(work / "out").mkdir(parents=True, exist_ok=True)
        stages: dict[str, float] = {}  # seconds per stage, logged: where a slow job spent its time
        began = trio.current_time()

        def stage(name: str) -> None:
            nonlocal began
            stages[name], began = trio.current_time() - began, trio.current_time()

        source = work / "source"
        pieces = self.content.read(record.manifest, 0, record.manifest.size, 1 << 20)
        async with await trio.open_file(source, "wb") as f, contextlib.aclosing(pieces):
            async for piece in pieces:
                await f.write(piece)
        stage("copy")
        info = await probe_source(source, SOURCE_INPUT_OPTIONS)
        if info.duration_s > self.config.max_source_duration_s:
            raise MediaToolError(
                f"the video is {info.duration_s:.0f} s long; media.max_source_duration_s is "
                f"{self.config.max_source_duration_s:.0f}"
            )
        rungs = choose_rungs(job.rungs, info.height)
        args = ladder_args(source, work / "out", rungs, has_audio=info.has_audio, preset=self.config.x264_preset)

        def progress(fraction: float) -> None:
            current = self._jobs[job.job_id]
            self._jobs[job.job_id] = replace(current, progress=round(fraction * _ENCODE_SHARE, 4))

        async with trio.open_nursery() as nursery:

            async def save_progress() -> None:
                while True:
                    await trio.sleep(_PROGRESS_SAVE_S)
                    await self.content.meta.put_job(self._jobs[job.job_id].row())

            nursery.start_soon(save_progress)
            stage("probe")
            await run_ffmpeg(args, duration_s=info.duration_s, on_progress=progress)
            nursery.cancel_scope.cancel()
        stage("encode")
        await validate_output(work / "out", rungs, info)
        stage("validate")
        await self._update(self._jobs[job.job_id], progress=0.95)
        published = await publish(work / "out", job.source_hash, rungs, self.content, announce=self.announce)
        stage("publish")
        log.info(
            "transcode job %s: %s", job.job_id, ", ".join(f"{name} {seconds:.2f} s" for name, seconds in stages.items())
        )
        renditions = [
            _rendition_json(rung.name, rung.height, rung.video_kbps, rung.bandwidth_bps, playlist, master)
            for rung, playlist, master in published.renditions
        ]
        row = RenditionRow(
            published.master.hex(), job.source_hash.hex(), published.mpd.hex(), json.dumps(renditions), self.clock()
        )
        with trio.CancelScope(shield=True):  # published: record it even if cancelled now
            await self.content.meta.put_rendition(row)
        return published

    # -- recording -------------------------------------------------------------------

    async def _save(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        with trio.CancelScope(shield=True):
            await self.content.meta.put_job(job.row())
        finished = [j for j in self._jobs.values() if j.status in FINISHED]
        for old in finished[: max(0, len(finished) - _KEEP_FINISHED)]:
            del self._jobs[old.job_id]

    async def _update(self, job: Job, **changes: object) -> Job:
        job = replace(job, updated_at=self.clock(), **changes)  # type: ignore[arg-type]
        await self._save(job)
        return job

    async def _finish(self, job: Job, status: str, error: str | None, result: RenditionSet | None = None) -> Job:
        changes: dict[str, object] = {"status": status, "error": error}
        if result is not None:
            changes |= {"progress": 1.0, "master_hash": result.master, "mpd_hash": result.mpd}
        return await self._update(job, **changes)
