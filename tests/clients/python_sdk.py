"""Drives daytona-mcp with the official MCP Python SDK (mcp==2.3.0), over Streamable HTTP or
over stdio (`daytona-mcp stdio`, started by the SDK's own stdio client).

    python python_sdk.py --url http://127.0.0.1:8001/mcp --key KEY --mode legacy|auto
    python python_sdk.py --stdio /path/to/daytona-mcp --stdio-arg=stdio --stdio-arg=--url=... \
        --key KEY --mode legacy|auto

`legacy` forces the initialize handshake (2025-11-25); `auto` (the SDK's default) probes
server/discover and speaks 2026-07-28. The script connects, lists the tools, creates a
sandbox, runs code, reads the structured results, follows progress and log messages, runs a
background job and reads it back, and checks error results. Any failed check raises, so the
exit code is non-zero; on success it prints one JSON line describing what it saw. Over stdio
the key reaches the process as DAYTONA_MCP_API_KEY (the relay mode's key); `--stdio-cwd` sets
its working directory.
"""

import argparse
import asyncio
import json
import uuid

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

EXPECTED_TOOLS = {
    "cancel_job",
    "create_sandbox",
    "delete_sandbox",
    "execute_code",
    "execute_shell",
    "get_job",
    "get_sandbox_info",
    "list_jobs",
    "list_sandboxes",
}


def check(condition, message):
    if not condition:
        raise AssertionError(message)


async def run(args) -> dict:
    key, mode = args.key, args.mode
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=120)
    logs = []

    async def on_log(params):
        logs.append((params.level, params.logger, params.data))

    if args.stdio:
        env = {"DAYTONA_MCP_API_KEY": key} if key else {}
        server = StdioServerParameters(command=args.stdio, args=args.stdio_arg, env=env, cwd=args.stdio_cwd)
    else:
        server = streamable_http_client(args.url, http_client=http)
    async with Client(server, mode=mode, log_level="info", logging_callback=on_log) as client:
        version = client.protocol_version
        expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
        check(version == expected, f"negotiated {version}, expected {expected}")

        listed = await client.list_tools()
        names = {tool.name for tool in listed.tools}
        check(EXPECTED_TOOLS <= names, f"tools: {sorted(names)}")
        for tool in listed.tools:
            check(tool.description, f"{tool.name} has a description")
            check(tool.output_schema is not None, f"{tool.name} has an output schema")
            check(tool.annotations is not None, f"{tool.name} has annotations")
        shell = next(t for t in listed.tools if t.name == "execute_shell")
        check(shell.annotations.destructive_hint is True, "execute_shell is destructive")
        check(shell.annotations.read_only_hint is False, "execute_shell is not read-only")

        sandbox = f"py-{mode}-{uuid.uuid4().hex[:8]}"
        created = await client.call_tool("create_sandbox", {"name": sandbox, "language": "python"})
        check(not created.is_error, f"create_sandbox: {created}")
        check(created.structured_content["name"] == sandbox, "the sandbox has its name")
        check(
            json.loads(created.content[0].text) == created.structured_content,
            "the text block carries the structured JSON",
        )

        code = await client.call_tool(
            "execute_code",
            {"sandbox_id": sandbox, "code": "import sys\nprint(6 * 7)\nprint('e', file=sys.stderr)"},
        )
        check(not code.is_error, f"execute_code: {code}")
        out = code.structured_content
        check(out["stdout"] == "42\n", f"stdout {out['stdout']!r}")
        check(out["stderr"] == "e\n", f"stderr {out['stderr']!r}")
        check(out["exit_code"] == 0, f"exit code {out['exit_code']}")

        failed = await client.call_tool("execute_shell", {"sandbox_id": sandbox, "command": "exit 3"})
        check(not failed.is_error, "a non-zero exit is a normal result")
        check(failed.structured_content["exit_code"] == 3, "exit code 3")

        progress = []

        async def on_progress(value, total, message):
            progress.append((value, message))

        streamed = await client.call_tool(
            "execute_shell",
            {"sandbox_id": sandbox, "command": "echo one; sleep 0.3; echo two"},
            progress_callback=on_progress,
        )
        check(streamed.structured_content["stdout"] == "one\ntwo\n", f"{streamed}")
        values = [v for v, _ in progress]
        check(len(values) >= 3, f"progress notifications: {progress}")
        check(values == sorted(values) and len(set(values)) == len(values), "progress increases")
        logged = "".join(str(data) for _, logger, data in logs if logger == "stdout")
        check("one\n" in logged and "two\n" in logged, f"output as log messages: {logs}")

        started = await client.call_tool(
            "execute_shell",
            {"sandbox_id": sandbox, "command": "sleep 0.2; echo later", "background": True},
        )
        handle = started.structured_content
        check(handle["status"] in ("queued", "running"), f"handle {handle}")
        job = await client.call_tool("get_job", {"job_id": handle["job_id"], "wait_s": 30})
        check(job.structured_content["status"] == "succeeded", f"job {job.structured_content}")
        check(job.structured_content["result"]["stdout"] == "later\n", "the job's result")

        missing = await client.call_tool("execute_shell", {"sandbox_id": "no-such-sandbox", "command": "true"})
        check(missing.is_error, "an unknown sandbox is an error result")
        refused = await client.call_tool("execute_shell", {"sandbox_id": sandbox})
        check(refused.is_error, "refused arguments are an error result")
        check("command" in refused.content[0].text, "the message names the field")

        deleted = await client.call_tool("delete_sandbox", {"sandbox_id": sandbox})
        check(deleted.structured_content["success"] is True, "deleted")
    await http.aclose()
    return {
        "mode": mode,
        "protocol_version": version,
        "tools": sorted(names),
        "stdout": out["stdout"],
        "progress": len(progress),
        "log_messages": len(logs),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url")
    parser.add_argument("--stdio", help="a server command to start and speak to over stdio")
    parser.add_argument("--stdio-arg", action="append", default=[])
    parser.add_argument("--stdio-cwd")
    parser.add_argument("--key", default="")
    parser.add_argument("--mode", choices=["legacy", "auto"], required=True)
    args = parser.parse_args()
    if bool(args.url) == bool(args.stdio):
        parser.error("give --url or --stdio")
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
