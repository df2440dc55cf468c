/**
 * The one error class of sift-ft. Native code throws it too (the binding constructs it), so
 * callers can always branch on `err.code`.
 */
export type SiftErrorCode =
  | 'E_SHAPE'
  | 'E_DTYPE'
  | 'E_DEVICE'
  | 'E_OOM'
  | 'E_CUDA'
  | 'E_FORMAT'
  | 'E_INDEX'
  | 'E_ARG'
  | 'E_DISPOSED'
  | 'E_NUMERIC'
  | 'E_MISMATCH'
  | 'E_UNSUPPORTED'
  | 'E_AUTOGRAD'
  | 'E_IO'
  | 'E_INTERNAL'
  | 'E_ABORTED'
  | 'E_DIST';

export class SiftError extends Error {
  readonly code: SiftErrorCode;
  constructor(code: SiftErrorCode | string, message: string) {
    super(message);
    this.name = 'SiftError';
    this.code = code as SiftErrorCode;
  }
}

export function check(cond: unknown, code: SiftErrorCode, message: string | (() => string)): asserts cond {
  if (!cond) throw new SiftError(code, typeof message === 'function' ? message() : message);
}
