"""The read operations of Together's fine-tuning API that the exporter uses.

Each method is one request through the shared ``JsonClient`` (budget, retries, capped bodies
parsed off the event loop). The list of jobs and the metrics are unpaged: the metrics endpoint
is read in step windows (``global_step_from``/``global_step_to``) by the provider instead.
"""

from __future__ import annotations

from urllib.parse import quote

from exporter.providers.together.models import EventList, Job, JobList, MetricList
from exporter.upstream.client import JsonClient

JOBS_PATH = "/v1/fine-tunes"


def job_path(job_id: str) -> str:
    """Percent-encode an ID as one path segment so no ID can reach another path."""
    if not job_id or job_id in {".", ".."}:
        raise ValueError("a job ID may not be empty or a dot segment")
    return f"{JOBS_PATH}/{quote(job_id, safe='')}"


class TogetherClient:
    """Read-only client of the fine-tuning endpoints; safe to share between tasks."""

    def __init__(self, http: JsonClient) -> None:
        self.http = http

    def __repr__(self) -> str:
        return f"TogetherClient(base_url={self.http.base_url!r})"

    async def list_jobs(self) -> list[Job]:
        return (await self.http.get("list_jobs", JOBS_PATH, {}, JobList)).data

    async def get_job(self, job_id: str) -> Job:
        return await self.http.get("get_job", job_path(job_id), {}, Job)

    async def list_events(self, job_id: str) -> EventList:
        return await self.http.get("list_events", f"{job_path(job_id)}/events", {}, EventList)

    async def list_metrics(
        self,
        job_id: str,
        *,
        step_from: int | None = None,
        step_to: int | None = None,
        resolution: int | None = None,
    ) -> MetricList:
        params: dict[str, str] = {}
        if step_from is not None:
            params["global_step_from"] = str(step_from)
        if step_to is not None:
            params["global_step_to"] = str(step_to)
        if resolution is not None:
            params["resolution"] = str(resolution)
        path = f"{job_path(job_id)}/metrics"
        return await self.http.get("list_metrics", path, params, MetricList)
