const sp = require('sparkplug-payload').get('spBv1.0');
const fs = require('fs');
const ts = 1767225600000;
const out = process.argv[2];
const payloads = {
  nbirth: { timestamp: ts, seq: 0, metrics: [
    { name: 'bdSeq', type: 'Int64', value: 3, timestamp: ts },
    { name: 'Node Control/Rebirth', type: 'Boolean', value: false, timestamp: ts },
    { name: 'Properties/Hardware', type: 'String', value: 'ipc-7', timestamp: ts },
  ]},
  dbirth: { timestamp: ts, seq: 1, metrics: [
    { name: 'temp', alias: 10, type: 'Double', value: 1100.5, timestamp: ts,
      properties: { engUnit: { type: 'String', value: '°C' }, Quality: { type: 'Int32', value: 192 } } },
    { name: 'flow', alias: 11, type: 'Float', value: 9.25, timestamp: ts },
    { name: 'count', alias: 12, type: 'UInt32', value: 4000000000, timestamp: ts },
    { name: 'neg', alias: 13, type: 'Int16', value: -5, timestamp: ts },
    { name: 'big', alias: 14, type: 'Int64', value: -9000000000, timestamp: ts },
    { name: 'run', alias: 15, type: 'Boolean', value: true, timestamp: ts },
    { name: 'state', alias: 16, type: 'String', value: 'running', timestamp: ts },
    { name: 'when', alias: 17, type: 'DateTime', value: ts, timestamp: ts },
    { name: 'gone', alias: 18, type: 'Double', value: null, isNull: true, timestamp: ts },
  ]},
  ddata: { timestamp: ts + 1000, seq: 2, metrics: [
    { alias: 10, type: 'Double', value: 1101.25, timestamp: ts + 1000 },
    { alias: 13, type: 'Int16', value: -7, timestamp: ts + 1000 },
    { alias: 15, type: 'Boolean', value: false, timestamp: ts + 1000, isHistorical: true },
  ]},
  ndeath: { timestamp: ts, metrics: [ { name: 'bdSeq', type: 'Int64', value: 3 } ] },
};
for (const [k, p] of Object.entries(payloads)) {
  fs.writeFileSync(`${out}/${k}.bin`, Buffer.from(sp.encodePayload(p)));
}
