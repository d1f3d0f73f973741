// A third-party Sparkplug B edge node built on Eclipse Tahu's sparkplug-client,
// for Calx's interop tests. It births one device with metrics of many types,
// then sends COUNT values of an Int32 counter by alias, one every 50 ms.
// It prints READY after its births, REBIRTH when asked for one, DONE at the end.
// Environment: BROKER, USERNAME, PASSWORD, GROUP, EDGE, COUNT.
"use strict";
const sparkplug = require("sparkplug-client");

const env = (k, d) => process.env[k] ?? d;
const group = env("GROUP", "tahu");
const edge = env("EDGE", "tahu-edge");
const count = Number(env("COUNT", "20"));
const base = Date.now();

const client = sparkplug.newClient({
  serverUrl: env("BROKER"), username: env("USERNAME"), password: env("PASSWORD"),
  groupId: group, edgeNode: edge, clientId: group + "." + edge, version: "spBv1.0", publishDeath: true,
});

let counter = 0;
let timer = null;

function births() {
  const ts = Date.now();
  client.publishNodeBirth({ timestamp: ts, metrics: [
    { name: "Node Control/Rebirth", type: "Boolean", value: false, timestamp: ts },
    { name: "Properties/Vendor", type: "String", value: "Tahu JS", timestamp: ts },
  ]});
  client.publishDeviceBirth("press", { timestamp: ts, metrics: [
    { name: "counter", alias: 1, type: "Int32", value: counter, timestamp: ts,
      properties: { engUnit: { type: "String", value: "parts" } } },
    { name: "i8", alias: 2, type: "Int8", value: -8, timestamp: ts },
    { name: "i16", alias: 3, type: "Int16", value: -1600, timestamp: ts },
    { name: "i64", alias: 4, type: "Int64", value: -6400000000, timestamp: ts },
    { name: "u32", alias: 5, type: "UInt32", value: 4000000000, timestamp: ts },
    { name: "u64", alias: 6, type: "UInt64", value: 64000000000, timestamp: ts },
    { name: "f32", alias: 7, type: "Float", value: 1.5, timestamp: ts },
    { name: "f64", alias: 8, type: "Double", value: 1234.5678, timestamp: ts },
    { name: "flag", alias: 9, type: "Boolean", value: true, timestamp: ts },
    { name: "label", alias: 10, type: "String", value: "die 7", timestamp: ts },
    { name: "notes", alias: 11, type: "Text", value: "long text", timestamp: ts },
    { name: "id", alias: 12, type: "UUID", value: "123e4567-e89b-12d3-a456-426614174000", timestamp: ts },
    { name: "started", alias: 13, type: "DateTime", value: base, timestamp: ts },
    { name: "blob", alias: 14, type: "Bytes", value: Buffer.from([1, 2, 3]), timestamp: ts },
    { name: "recipe", alias: 15, type: "DataSet", timestamp: ts, value: {
      numOfColumns: 2, columns: ["step", "temp"], types: ["Int32", "Double"], rows: [[1, 80.5], [2, 95]] } },
  ]});
  console.log("READY");
}

client.on("birth", () => {
  births();
  if (timer) return;
  timer = setInterval(() => {
    if (counter >= count) {
      clearInterval(timer);
      console.log("DONE");
      return;
    }
    counter++;
    client.publishDeviceData("press", { timestamp: Date.now(), metrics: [
      { alias: 1, type: "Int32", value: counter, timestamp: Date.now() },
    ]});
  }, 50);
});

client.on("ncmd", (payload) => {
  for (const m of payload.metrics || []) {
    if (m.name === "Node Control/Rebirth" && m.value) {
      console.log("REBIRTH");
      births();
    }
  }
});

client.on("error", (e) => console.error("error", e.message));
process.on("SIGTERM", () => { client.stop(); process.exit(0); });
process.stdin.on("end", () => { client.stop(); process.exit(0); });
process.stdin.resume();
