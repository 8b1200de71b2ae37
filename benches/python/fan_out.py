"""The Python anchor of scripts/bench_fan_out.sh: the same fan-out written by
hand as a Prefect user writes it, with `run_deployment` and `asyncio.gather`,
the deployment's concurrency limit capping how many children run at once.

    PREFECT_API_URL=... python fan_out.py COUNT
"""
import asyncio
import sys
import time

from prefect import flow
from prefect.deployments import run_deployment


@flow
async def python_fan_out(count: int) -> int:
    runs = await asyncio.gather(
        *[
            run_deployment("sum-to/fan-out", parameters={"n": 1 + i % 10})
            for i in range(count)
        ]
    )
    return sum(1 for run in runs if run.state.is_completed())


if __name__ == "__main__":
    count = int(sys.argv[1])
    started = time.monotonic()
    completed = asyncio.run(python_fan_out(count))
    print(f"python: {completed} of {count} children completed in {time.monotonic() - started:.1f} s")
