// Calls Calx's MCP endpoint with the MCP TypeScript SDK's client, over
// Streamable HTTP or through `calx mcp` on stdio, and prints one JSON
// object: the tools listed and the answers of the tools asked.
//
//   node client.js http <url> <token> <tool> [<tool> ...]
//   node client.js stdio <calx binary> <url> <token file> <tool> [<tool> ...]
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const [mode, ...rest] = process.argv.slice(2);
let transport, tools;
if (mode === "http") {
  const [url, token, ...names] = rest;
  transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  tools = names;
} else if (mode === "stdio") {
  const [calx, url, tokenFile, ...names] = rest;
  transport = new StdioClientTransport({ command: calx, args: ["mcp", "--url", url, "--token-file", tokenFile], stderr: "inherit" });
  tools = names;
} else {
  console.error("usage: node client.js http|stdio ...");
  process.exit(2);
}

const client = new Client({ name: "calx-interop", version: "1.0.0" });
await client.connect(transport);
const listed = await client.listTools();
const answers = {};
for (const name of tools) {
  const res = await client.callTool({ name, arguments: {} });
  answers[name] = { isError: res.isError === true, text: res.content.map((c) => c.text ?? "").join("") };
}
await client.close();
process.stdout.write(JSON.stringify({ server: client.getServerVersion(), tools: listed.tools.map((t) => t.name), answers }) + "\n");
