// What the harness uses from the real client (bundled by esbuild; the package is untranspiled ESM).
export {
  BufferAnalystService,
  OverlayAnalystService,
  GeometryBufferAnalystParameters,
  DatasetBufferAnalystParameters,
  GeometryOverlayAnalystParameters,
  DatasetOverlayAnalystParameters,
  BufferSetting,
  BufferDistance,
  DataReturnOption,
  FilterParameter,
} from "@supermap/iclient-common/iServer/index.js";
export { GeoJSON as GeoJSONFormat } from "@supermap/iclient-common/format/GeoJSON.js";
