/** Every op, forward and backward, by family. Tensor methods and the public API call these. */
export * from './creation';
export * from './shape';
export * from './elementwise';
export * from './reduce';
export * from './matmul';
export * from './nn';
export * from './attention';
export { backward, noGrad, enableGrad, isGradEnabled } from './tape';
