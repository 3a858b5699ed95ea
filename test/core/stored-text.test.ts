import { describe, expect, it } from 'vitest';
import { eventJson, withoutNul } from '../../src/core/events.js';

// PostgreSQL stores no NUL in text or jsonb: stored text has U+FFFD in its place.
describe('text as stored', () => {
  it('replaces NUL with U+FFFD, and leaves other text alone', () => {
    expect(withoutNul('a\0b\0')).toBe('a\uFFFDb\uFFFD');
    expect(withoutNul('plain')).toBe('plain');
    expect(withoutNul(null)).toBeNull();
  });

  it('an event stores NULs as U+FFFD, and a backslash before the text "u0000" as it was', () => {
    const data = { output: 'x\0y', literal: '\\u0000 stays', both: '\\\0', ['k\0ey']: ['\0'] };
    const stored = JSON.parse(eventJson(data)) as Record<string, unknown>;
    expect(stored).toEqual({ output: 'x\uFFFDy', literal: '\\u0000 stays', both: '\\\uFFFD', ['k\uFFFDey']: ['\uFFFD'] });
    expect(eventJson({ a: 1 })).toBe('{"a":1}');
  });
});
