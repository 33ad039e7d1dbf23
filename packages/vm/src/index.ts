export {
  attachHyperV,
  enlightenedPartitionOptions,
  HYPERCALL_PORT,
  type AttachOptions,
  type EnlightenmentConfig,
  type Enlightenments,
} from './enlighten.js';
