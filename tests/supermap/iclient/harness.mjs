// Drive a geoservice SuperMap surface with the real @supermap/iclient-common under Node.
//
//   node harness.mjs <service-url> <calls.json>
//
// <service-url>: e.g. http://127.0.0.1:PORT/iserver/services/spatialanalyst-sample/restjsr/spatialanalyst
// <calls.json>: a file with a JSON list of calls; each is
//   {"service": "buffer" | "overlay", "kind": "geometry" | "dataset", "format": "ISERVER" | "GEOJSON", ...}
//   geometry buffer:  {"geometry": <GeoJSON geometry>, "srid": 4326, "setting": {BufferSetting options}}
//   dataset buffer:   {"dataset": "name@src", "setting": {...}, "filter": {FilterParameter options},
//                      "returnOption": {DataReturnOption options}, "isAttributeRetained": bool, "isUnion": bool}
//   geometry overlay: {"source": <GeoJSON>, "operate": <GeoJSON>, "operation": "CLIP"} or
//                     {"sources": [<GeoJSON>...], "operates": [<GeoJSON>...], "operation": ...}
//   dataset overlay:  {"dataset": "name@src", "operateDataset": ..., "operation": ..., "sourceFilter": {...},
//                      "operateFilter": {...}, "sourceFields": [...], "operateFields": [...], "returnOption": {...}}
// Prints one JSON line: a list of {"ok": bool, "result": ..., "error": ...} in call order.
// The bundle (dist/iclient.mjs) is built on first use with esbuild plus the three browser globals the
// client reads at load time (see shared/reference/supermap-rest.md section 5).
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const [, , serviceUrl, callsPath] = process.argv;
const base = new URL(serviceUrl);

globalThis.navigator ??= { userAgent: "node" }; // Util.js reads navigator.userAgent at load
globalThis.window = globalThis; // FetchRequest.js: `let fetch = window.fetch`
globalThis.document = { // canvas probe + same-domain check (same origin: plain fetch, no JSONP)
  createElement: () => ({ getContext: null, style: {} }),
  location: new URL(base.origin + "/"),
  domain: base.hostname,
};

async function bundle() {
  const out = join(here, "dist", "iclient.mjs");
  const entry = join(here, "entry.js");
  if (!existsSync(out) || statSync(out).mtimeMs < statSync(entry).mtimeMs) {
    const esbuild = await import("esbuild");
    mkdirSync(join(here, "dist"), { recursive: true });
    await esbuild.build({
      entryPoints: [entry], bundle: true, platform: "node", format: "esm",
      outfile: out, logLevel: "error",
    });
  }
  return import(out);
}

const sm = await bundle();
const geojson = new sm.GeoJSONFormat();

function geometry(obj, srid) {
  const g = geojson.read(obj, "Geometry");
  if (srid) g.SRID = srid;
  return g;
}

function setting(opts = {}) {
  const { left, right, ...rest } = opts;
  return new sm.BufferSetting({
    ...rest,
    ...(left !== undefined ? { leftDistance: new sm.BufferDistance({ value: left }) } : {}),
    ...(right !== undefined ? { rightDistance: new sm.BufferDistance({ value: right }) } : {}),
  });
}

function parameters(call) {
  if (call.service === "buffer" && call.kind === "geometry") {
    return new sm.GeometryBufferAnalystParameters({
      sourceGeometry: geometry(call.geometry, call.srid), bufferSetting: setting(call.setting),
    });
  }
  if (call.service === "buffer") {
    return new sm.DatasetBufferAnalystParameters({
      dataset: call.dataset, bufferSetting: setting(call.setting),
      filterQueryParameter: new sm.FilterParameter(call.filter || {}),
      resultSetting: new sm.DataReturnOption(call.returnOption || {}),
      isAttributeRetained: call.isAttributeRetained ?? true, isUnion: call.isUnion ?? false,
    });
  }
  if (call.kind === "geometry") {
    const opts = { operation: call.operation };
    if (call.sources) {
      opts.sourceGeometries = call.sources.map((g) => geometry(g, call.srid));
      opts.operateGeometries = call.operates.map((g) => geometry(g, call.srid));
    } else {
      opts.sourceGeometry = geometry(call.source, call.srid);
      opts.operateGeometry = geometry(call.operate, call.srid);
    }
    return new sm.GeometryOverlayAnalystParameters(opts);
  }
  return new sm.DatasetOverlayAnalystParameters({
    sourceDataset: call.dataset, operateDataset: call.operateDataset, operation: call.operation,
    operateRegions: (call.operateRegions || []).map((g) => geometry(g, call.srid)),
    sourceDatasetFilter: new sm.FilterParameter(call.sourceFilter || {}),
    operateDatasetFilter: new sm.FilterParameter(call.operateFilter || {}),
    sourceDatasetFields: call.sourceFields || [], operateDatasetFields: call.operateFields || [],
    tolerance: call.tolerance ?? 0, resultSetting: new sm.DataReturnOption(call.returnOption || {}),
  });
}

async function run(call) {
  const Service = call.service === "buffer" ? sm.BufferAnalystService : sm.OverlayAnalystService;
  const service = new Service(serviceUrl, { format: call.format || "ISERVER" });
  const answer = await service.processAsync(parameters(call));
  return answer.type === "processCompleted"
    ? { ok: true, result: answer.result }
    : { ok: false, error: answer.error instanceof Error ? String(answer.error) : answer.error ?? null };
}

const calls = JSON.parse(readFileSync(callsPath, "utf8"));
const out = [];
for (const call of calls) {
  try {
    out.push(await run(call));
  } catch (e) {
    out.push({ ok: false, exception: String(e && e.stack ? e.stack : e) });
  }
}
process.stdout.write(JSON.stringify(out) + "\n");
