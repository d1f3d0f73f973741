// An observer that decodes every Sparkplug message of a broker with Eclipse
// Tahu's sparkplug-payload and checks the edge nodes' conformance. On SIGTERM
// (or when stdin closes) it prints one JSON summary line and exits.
// Environment: BROKER, USERNAME, PASSWORD.
"use strict";
const mqtt = require("mqtt");
const sp = require("sparkplug-payload").get("spBv1.0");

const client = mqtt.connect(process.env.BROKER, {
  username: process.env.USERNAME, password: process.env.PASSWORD, clientId: "tahu-observer-" + process.pid, clean: true,
});
const nodes = {};
const errors = [];
const counts = {};
const fail = (node, msg) => { if (errors.length < 50) errors.push(node + ": " + msg); };

function node(key) {
  if (!nodes[key]) nodes[key] = { births: 0, deaths: 0, bdSeq: null, seq: null, aliases: {}, devices: {}, data: 0, historical: 0, birthMetrics: {} };
  return nodes[key];
}

client.on("connect", () => {
  client.subscribe("spBv1.0/#", { qos: 1 });
  console.log("READY");
});

client.on("message", (topic, buf, packet) => {
  const parts = topic.split("/");
  const type = parts[2];
  if (parts[1] === "STATE") return;
  counts[type] = (counts[type] || 0) + 1;
  const key = parts[1] + "/" + parts[3];
  const n = node(key);
  let p;
  try {
    p = sp.decodePayload(buf);
  } catch (e) {
    return fail(key, type + " does not decode: " + e.message);
  }
  const metrics = p.metrics || [];
  if (packet.retain) fail(key, type + " is retained");
  if (type === "NDEATH") {
    n.deaths++;
    console.log("NDEATH " + key);
    if (packet.qos !== 1) fail(key, "NDEATH at QoS " + packet.qos);
    const bd = metrics.find((m) => m.name === "bdSeq");
    if (!bd) return fail(key, "NDEATH without bdSeq");
    if (Number(bd.value) !== n.bdSeq) fail(key, "NDEATH bdSeq " + bd.value + " does not match NBIRTH bdSeq " + n.bdSeq);
    n.seq = null;
    return;
  }
  if (["NBIRTH", "DBIRTH", "NDATA", "DDATA", "DDEATH"].includes(type)) {
    if (packet.qos !== 0) fail(key, type + " at QoS " + packet.qos);
    if (p.seq === undefined || p.seq === null) return fail(key, type + " without seq");
    const seq = Number(p.seq);
    if (type === "NBIRTH") {
      if (seq !== 0) fail(key, "NBIRTH seq " + seq);
      n.births++;
      n.aliases = {};
      const bd = metrics.find((m) => m.name === "bdSeq");
      if (!bd) fail(key, "NBIRTH without bdSeq");
      else {
        if (bd.type !== "Int64" && bd.type !== "UInt64") fail(key, "bdSeq type " + bd.type);
        const v = Number(bd.value);
        if (n.bdSeq !== null && n.births > 1 && v !== (n.bdSeq + 1) % 256 && v !== n.bdSeq) fail(key, "bdSeq went from " + n.bdSeq + " to " + v);
        n.bdSeq = v;
      }
      const rb = metrics.find((m) => m.name === "Node Control/Rebirth");
      if (!rb || rb.type !== "Boolean") fail(key, "NBIRTH without Node Control/Rebirth Boolean");
    } else {
      if (n.seq === null) fail(key, type + " before NBIRTH");
      else if (seq !== (n.seq + 1) % 256) fail(key, type + " seq " + seq + " after " + n.seq);
    }
    n.seq = seq;
    if (p.timestamp === undefined) fail(key, type + " without payload timestamp");
    if (type === "NBIRTH" || type === "DBIRTH") {
      for (const m of metrics) {
        if (m.name === undefined || m.type === undefined || m.timestamp === undefined) fail(key, type + " metric without name, type or timestamp");
        if (m.alias !== undefined) {
          const a = String(m.alias);
          if (n.aliases[a] !== undefined && n.aliases[a] !== m.name) fail(key, "alias " + a + " used twice");
          n.aliases[a] = m.name;
        }
        if (type === "DBIRTH") n.birthMetrics[parts[4] + "/" + m.name] = m.value === null ? null : String(m.value);
      }
      if (type === "DBIRTH") n.devices[parts[4]] = true;
    }
    if (type === "DDATA" || type === "NDATA") {
      if (type === "DDATA" && !n.devices[parts[4]]) fail(key, "DDATA before DBIRTH of " + parts[4]);
      for (const m of metrics) {
        n.data++;
        if (m.isHistorical) n.historical++;
        if (m.name !== undefined) fail(key, type + " metric with a name");
        if (m.alias === undefined) fail(key, type + " metric without alias");
        else if (n.aliases[String(m.alias)] === undefined) fail(key, type + " with unknown alias " + m.alias);
        if (m.timestamp === undefined) fail(key, type + " metric without timestamp");
      }
    }
  }
});

function finish() {
  const out = { errors, counts, nodes: {} };
  for (const [k, n] of Object.entries(nodes)) {
    out.nodes[k] = { births: n.births, deaths: n.deaths, bdSeq: n.bdSeq, data: n.data, historical: n.historical,
      devices: Object.keys(n.devices), aliases: Object.keys(n.aliases).length };
  }
  console.log(JSON.stringify(out));
  client.end(true, () => process.exit(0));
  setTimeout(() => process.exit(0), 500);
}
process.on("SIGTERM", finish);
process.stdin.on("end", finish);
process.stdin.resume();
