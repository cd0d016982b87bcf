"""Latency of `tools/call` round trips through the Python `mcp` SDK over stdio.

Run by the ignored test `stdio_latency_benchmark` in mcp/tests/mcp_e2e.rs. The argument is a
JSON object: {"command": [...lockplane serve --stdio...], "iterations": N, "warmup": W}. Prints
one JSON line: per tool, p50/p99/mean/min/max in milliseconds.
"""

import asyncio
import json
import statistics
import sys
import time

from mcp import Client
from mcp.client.stdio import StdioServerParameters


def percentile(sorted_ms, p):
    k = max(0, min(len(sorted_ms) - 1, round(p / 100 * (len(sorted_ms) - 1))))
    return sorted_ms[k]


async def measure(client, tool, n, warmup):
    for _ in range(warmup):
        r = await client.call_tool(tool, {})
        assert not r.is_error, r.content
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        r = await client.call_tool(tool, {})
        samples.append((time.perf_counter() - start) * 1000)
        assert not r.is_error, r.content
    samples.sort()
    return {
        "n": n,
        "p50_ms": round(percentile(samples, 50), 3),
        "p99_ms": round(percentile(samples, 99), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
        "min_ms": round(samples[0], 3),
        "max_ms": round(samples[-1], 3),
    }


async def main(cfg):
    command = cfg["command"]
    params = StdioServerParameters(command=command[0], args=command[1:], env={})
    async with Client(params) as client:
        catalog = (await client.call_tool("introspect_catalog", {})).structured_content
        tables = len(catalog["catalog"]["schemas"]["public"]["tables"])
        plans = len((await client.call_tool("list_plans", {})).structured_content["plans"])
        result = {"tables": tables, "plans": plans, "protocol": client.protocol_version}
        for tool in ("introspect_catalog", "list_plans"):
            result[tool] = await measure(client, tool, cfg["iterations"], cfg["warmup"])
        return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
