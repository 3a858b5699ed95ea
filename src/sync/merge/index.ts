// Pure three-way merge for version sync. See src/sync/README.md for the rules.
export {
  mergeFile,
  conflictKind,
  isBinary,
  STRATEGY_TABLE,
  DEFAULT_MAX_MERGE_BYTES,
  DEFAULT_MAX_MERGE_LINES,
  BINARY_SNIFF_BYTES,
} from './file.js';
export type { Strategy, ConflictKind, FileMergeInput, FileMergeResult, MergeOptions } from './file.js';
export { mergeText, DEFAULT_MAX_EDIT_LENGTH } from './text.js';
export type { TextInput, TextMergeResult } from './text.js';
export { mergeJson, escapePointerToken } from './json.js';
export type { JsonMergeResult } from './json.js';
