"""Drives daytona-mcp with LangSwarm 0.1.0's own remote MCP tool (`RemoteMCPTool`, from PyPI),
constructed in Python the way docs/clients.md shows. Run by the test
`mcp_clients::langswarm_remote_mcp_tool_from_pypi` (tests/clients/setup.sh installs the package).

    DAYTONA_MCP_API_KEY=... python langswarm_remote.py http://127.0.0.1:8001/mcp

Checks tools/list, create, execute (both call formats), list and delete, and how a tool failure
shows up (LangSwarm reports `success: True`; the MCP result carries `isError: true`). Any failed
check raises, so the exit code is non-zero; on success it prints one JSON line.
"""

import json
import sys
import uuid

from langswarm.tools.mcp.remote import RemoteMCPTool


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def call(tool, name, arguments):
    return tool.run({"method": "call_tool", "params": {"tool_name": name, "arguments": arguments}})


def main(url):
    # The snippet of docs/clients.md. LangSwarm replaces a header value that is exactly ${VAR}
    # with that variable (so `X-API-Key`, not `Authorization: Bearer ${VAR}`).
    daytona = RemoteMCPTool(
        identifier="daytona",
        mcp_url=url,
        headers={"X-API-Key": "${DAYTONA_MCP_API_KEY}"},
        timeout=300,
    )

    tools = daytona.get_available_tools()
    check(tools.get("count", 0) >= 9, f"tools: {tools}")
    check("execute_shell" in tools["tools"], "execute_shell is listed")

    name = f"lsw-{uuid.uuid4().hex[:8]}"
    created = call(daytona, "create_sandbox", {"name": name})
    check(created["success"], f"create_sandbox: {created}")
    check(not created["result"].get("isError"), f"create_sandbox: {created}")
    sandbox = created["result"]["structuredContent"]["sandbox_id"]

    ran = call(daytona, "execute_shell", {"sandbox_id": name, "command": "echo from langswarm"})
    check(ran["result"]["structuredContent"]["stdout"] == "from langswarm\n", f"{ran}")
    # The MCP call format of `run`.
    direct = daytona.run({"name": "execute_code", "arguments": {"sandbox_id": name, "code": "print(2 + 2)"}})
    check(direct["result"]["structuredContent"]["stdout"] == "4\n", f"{direct}")

    listed = call(daytona, "list_sandboxes", {})
    names = [s["name"] for s in listed["result"]["structuredContent"]["sandboxes"]]
    check(name in names, f"list_sandboxes: {listed}")

    # A tool failure: LangSwarm says success, the result says isError.
    failed = call(daytona, "execute_shell", {"sandbox_id": "no-such-sandbox", "command": "true"})
    check(failed["success"] is True, f"LangSwarm reports tool failures as successes: {failed}")
    check(failed["result"]["isError"] is True, f"the result carries isError: {failed}")
    failure_text = failed["result"]["content"][0]["text"]
    check("no-such-sandbox" in failure_text, f"the message names the sandbox: {failed}")
    # A tool LangSwarm did not discover never reaches the server.
    unknown = call(daytona, "no_such_tool", {})
    check("not available" in unknown.get("error", ""), f"{unknown}")

    check(daytona.check_connection()["connected"], "check_connection")
    deleted = call(daytona, "delete_sandbox", {"sandbox_id": sandbox})
    check(deleted["result"]["structuredContent"]["success"] is True, f"delete_sandbox: {deleted}")

    # The same tool against the server's root URL (POST /).
    root = RemoteMCPTool(
        identifier="daytona-root",
        mcp_url=url.rsplit("/mcp", 1)[0] + "/",
        headers={"X-API-Key": "${DAYTONA_MCP_API_KEY}"},
        timeout=300,
    )
    check(root.get_available_tools().get("count", 0) >= 9, "tools over POST /")
    print(json.dumps({"tools": tools["count"], "failure": failure_text, "sandbox": name}))


if __name__ == "__main__":
    main(sys.argv[1])
