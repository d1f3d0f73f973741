// An OPC UA server for the tests of Calx's OPC UA connector: node-opcua,
// with security policies None and Basic256Sha256 (Sign, SignAndEncrypt), user
// names required (no anonymous access), and a few plant variables.
// Environment: PORT, PKI_DIR (its own PKI, made on first start), OPC_USER,
// OPC_PASSWORD, and SCALE: that many more variables Scale.S<i> whose values
// change every second (for the connector's benchmark at scale). Prints "READY <endpoint> <namespace index>" once it serves,
// and stops when stdin closes.
"use strict";
const path = require("path");
const { OPCUAServer, OPCUACertificateManager, SecurityPolicy, MessageSecurityMode, DataType, Variant, StatusCodes } = require("node-opcua");

async function main() {
  const certs = new OPCUACertificateManager({
    rootFolder: path.join(process.env.PKI_DIR, "server"),
    automaticallyAcceptUnknownCertificate: true,
  });
  await certs.initialize();
  const server = new OPCUAServer({
    port: Number(process.env.PORT),
    hostname: "127.0.0.1",
    serverCertificateManager: certs,
    securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
    securityModes: [MessageSecurityMode.None, MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
    allowAnonymous: false,
    userManager: {
      isValidUser: (user, password) => user === process.env.OPC_USER && password === process.env.OPC_PASSWORD,
    },
  });
  await server.initialize();
  const space = server.engine.addressSpace;
  const ns = space.getOwnNamespace();
  const kiln = ns.addObject({ organizedBy: space.rootFolder.objects, browseName: "Kiln1" });
  ns.addVariable({
    componentOf: kiln, browseName: "Temp", nodeId: "s=Kiln1.Temp", dataType: "Double",
    value: { dataType: DataType.Double, value: 1101.5 },
  });
  let setpoint = 18;
  ns.addVariable({
    componentOf: kiln, browseName: "Setpoint", nodeId: "s=Kiln1.Setpoint", dataType: "Double",
    accessLevel: "CurrentRead | CurrentWrite", userAccessLevel: "CurrentRead | CurrentWrite", minimumSamplingInterval: 100,
    value: {
      get: () => new Variant({ dataType: DataType.Double, value: setpoint }),
      set: (v) => { setpoint = v.value; return StatusCodes.Good; },
    },
  });
  const scale = Number(process.env.SCALE || 0);
  if (scale > 0) {
    const folder = ns.addObject({ organizedBy: space.rootFolder.objects, browseName: "Scale" });
    for (let i = 0; i < scale; i++) {
      ns.addVariable({
        componentOf: folder, browseName: "S" + i, nodeId: "s=Scale.S" + i, dataType: "Double", minimumSamplingInterval: 1000,
        value: { get: () => new Variant({ dataType: DataType.Double, value: Math.floor(Date.now() / 1000) + i }) },
      });
    }
  }
  await server.start();
  console.log("READY " + server.getEndpointUrl() + " " + ns.index);
  process.stdin.resume();
  process.stdin.on("end", async () => {
    await server.shutdown(0);
    process.exit(0);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
