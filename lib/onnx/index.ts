/** ONNX graphs: export of sift-ft's models, and import of ONNX graphs as trainable models. */
export { exportOnnx, buildOnnxGraph } from './export';
export type { ExportOnnxOptions, ExportOnnxResult } from './export';
export { GraphBuilder, ONNX_DTYPE } from './builder';
export { loadOnnxModel, loadOnnxModelFromBuffer, OnnxModel, parameterPath, checkOperators } from './import';
export type { OnnxLoadOptions } from './import';
export { parseOnnx } from './graph';
export type { OnnxGraph, OnnxNode } from './graph';
