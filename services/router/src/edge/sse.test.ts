import assert from 'node:assert/strict';
import { SseDataReader } from './sse';

/** Feeds `stream` cut at every position into two chunks, and checks each cut reads the same. */
function readEveryCut(stream: string): string[] {
  const whole = new SseDataReader().push(stream);
  for (let cut = 1; cut < stream.length; cut++) {
    const reader = new SseDataReader();
    const payloads = [...reader.push(stream.slice(0, cut)), ...reader.push(stream.slice(cut))];
    assert.deepEqual(payloads, whole, `cut at ${cut}: ${JSON.stringify(stream.slice(0, cut))}`);
  }
  return whole;
}

describe('SseDataReader', () => {
  it('reads events separated by LF, CRLF or CR alike, however the chunks are cut', () => {
    for (const eol of ['\n', '\r\n', '\r']) {
      const stream = `data: {"a":1}${eol}${eol}: a comment${eol}event: delta${eol}data: {"b":2}${eol}${eol}data: [DONE]${eol}${eol}`;
      assert.deepEqual(readEveryCut(stream), ['{"a":1}', '{"b":2}', '[DONE]'], JSON.stringify(eol));
    }
  });

  it('joins an event\'s data lines with LF and takes "data:" with or without its space', () => {
    assert.deepEqual(readEveryCut('data:first\r\ndata: second\r\n\r\n'), ['first\nsecond']);
  });

  it('hands over nothing of an event whose blank line has not arrived', () => {
    const reader = new SseDataReader();
    assert.deepEqual(reader.push('data: {"a":1}\r\n'), []);
    assert.deepEqual(reader.push('\r\n'), ['{"a":1}']);
  });

  it('reads an empty chunk between a CR and its LF as nothing at all', () => {
    const reader = new SseDataReader();
    assert.deepEqual([...reader.push('data: a\r'), ...reader.push(''), ...reader.push('\ndata: b\r\n\r\n')], ['a\nb']);
  });

  it('skips the whole event of a line past 1 MiB, not only the line', () => {
    const reader = new SseDataReader();
    const payloads = [...reader.push('data: a\n'), ...reader.push(`data: ${'x'.repeat(1_100_000)}`), ...reader.push('tail\n\ndata: next\n\n')];
    assert.deepEqual(payloads, ['next']);
  });

  it('skips a line or an event past 1 MiB, keeps nothing of it, and reads the events after it', () => {
    const reader = new SseDataReader();
    const huge = 'x'.repeat(600_000);
    assert.deepEqual(reader.push(`data: ${huge}`), []);
    assert.deepEqual(reader.push(`${huge}\n\ndata: ok\n\n`), ['ok'], 'a line past the cap is skipped');
    assert.deepEqual(reader.push(`data: ${huge}\ndata: ${huge}\n\ndata: after\n\n`), ['after'], 'an event past the cap is skipped');
  });
});
