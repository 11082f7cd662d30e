/**
 * Incremental SSE framing: feed raw chunks, get each event's `data` payload.
 * Adapters see payloads, never bytes; the bytes themselves are forwarded
 * to the caller untouched.
 */
export class SseDataReader {
  private buffered = '';

  /** Returns the data payloads of the events completed by this chunk. */
  push(chunk: string): string[] {
    this.buffered += chunk;
    const payloads: string[] = [];
    let boundary = this.buffered.indexOf('\n\n');
    while (boundary !== -1) {
      const event = this.buffered.slice(0, boundary);
      this.buffered = this.buffered.slice(boundary + 2);
      const data = dataOf(event);
      if (data !== undefined) payloads.push(data);
      boundary = this.buffered.indexOf('\n\n');
    }
    return payloads;
  }
}

function dataOf(event: string): string | undefined {
  let data: string | undefined;
  for (const rawLine of event.split('\n')) {
    const line = rawLine.endsWith('\r') ? rawLine.slice(0, -1) : rawLine;
    if (!line.startsWith('data:')) continue;
    const value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
    data = data === undefined ? value : `${data}\n${value}`;
  }
  return data;
}
