"""Drives daytona-mcp with LangSwarm's own remote MCP tool (`langswarm.tools.mcp.remote`), built
the way the README's `tools:` block describes it. Run by hand, not by CI: LangSwarm pulls in
about 200 packages (~1 GB). The CI test `mcp_transport::langswarm_dialect` sends the same
requests this tool sends (no "jsonrpc", no session, the key as X-API-Key).

    python -m venv /tmp/lsw && /tmp/lsw/bin/pip install langswarm
    DAYTONA_MCP_API_KEY=... /tmp/lsw/bin/python tests/clients/langswarm_remote.py http://localhost:8001/mcp
"""

import sys

from langswarm.tools.mcp.remote.main import RemoteMCPTool


def main():
    tool = RemoteMCPTool(
        identifier="daytona",
        mcp_url=sys.argv[1],
        headers={"X-API-Key": "${DAYTONA_MCP_API_KEY}"},
        timeout=300,
    )
    tools = tool.get_available_tools()
    assert tools["count"] >= 9, tools
    created = tool.run({"method": "call_tool", "params": {"tool_name": "create_sandbox", "arguments": {}}})
    assert created["success"], created
    sandbox = created["result"]["structuredContent"]["sandbox_id"]
    ran = tool.run(
        {"method": "call_tool", "params": {"tool_name": "execute_shell",
                                           "arguments": {"sandbox_id": sandbox, "command": "echo from langswarm"}}}
    )
    assert ran["result"]["structuredContent"]["stdout"] == "from langswarm\n", ran
    direct = tool.run({"name": "execute_code", "arguments": {"sandbox_id": sandbox, "code": "print(2 + 2)"}})
    assert direct["result"]["structuredContent"]["stdout"] == "4\n", direct
    assert tool.check_connection()["connected"]
    tool.run({"method": "call_tool", "params": {"tool_name": "delete_sandbox", "arguments": {"sandbox_id": sandbox}}})
    print("langswarm remote MCP tool: ok")


if __name__ == "__main__":
    main()
