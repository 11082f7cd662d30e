/** The longest line or event data kept while waiting for its end; past it, it is skipped (its bytes still reach the caller). */
const MAX_CHARS = 1 << 20;

const LF = 10;
const CR = 13;

/**
 * Incremental SSE framing: feed raw chunks, get each event's `data` payload.
 * Adapters see payloads, never bytes; the bytes themselves are forwarded
 * to the caller untouched. Lines end in LF, CRLF or CR, as the SSE spec
 * allows (a provider behind a proxy may send any), and a chunk may end
 * anywhere, even between a CR and its LF. What is held between chunks is
 * one unfinished line and one unfinished event's data, each capped.
 */
export class SseDataReader {
  /** The start of a line whose end has not arrived yet. */
  private partial = '';
  /** The line in progress went past MAX_CHARS: it is skipped up to its end. */
  private skippingLine = false;
  /** The current event's data lines so far, joined by LF; undefined until one arrives. */
  private data: string | undefined;
  /** The current event's data went past MAX_CHARS: the event is skipped. */
  private skippingEvent = false;
  /** The last chunk ended in CR: an LF starting the next one ends no second line. */
  private afterCarriageReturn = false;

  /** Returns the data payloads of the events completed by this chunk. */
  push(chunk: string): string[] {
    const payloads: string[] = [];
    // An empty chunk says nothing, not even that a CR before it was a line's whole end.
    if (chunk.length === 0) return payloads;
    let start = 0;
    if (this.afterCarriageReturn && chunk.charCodeAt(0) === LF) start = 1;
    this.afterCarriageReturn = false;
    for (let i = start; i < chunk.length; i++) {
      const c = chunk.charCodeAt(i);
      if (c !== LF && c !== CR) continue;
      if (this.skippingLine) this.skippingLine = false;
      else this.line(this.partial === '' ? chunk.slice(start, i) : this.partial + chunk.slice(start, i), payloads);
      this.partial = '';
      if (c === CR) {
        if (i + 1 === chunk.length) this.afterCarriageReturn = true;
        else if (chunk.charCodeAt(i + 1) === LF) i++;
      }
      start = i + 1;
    }
    if (start < chunk.length && !this.skippingLine) {
      this.partial += chunk.slice(start);
      if (this.partial.length > MAX_CHARS) {
        // The line is lost, so its event is too: handing over the event without it would cut it silently.
        this.partial = '';
        this.skippingLine = true;
        this.data = undefined;
        this.skippingEvent = true;
      }
    }
    return payloads;
  }

  private line(line: string, payloads: string[]): void {
    if (line === '') {
      // A blank line ends the event.
      if (this.data !== undefined && !this.skippingEvent) payloads.push(this.data);
      this.data = undefined;
      this.skippingEvent = false;
      return;
    }
    if (this.skippingEvent || !line.startsWith('data:')) return;
    const value = line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5);
    this.data = this.data === undefined ? value : `${this.data}\n${value}`;
    if (this.data.length > MAX_CHARS) {
      this.data = undefined;
      this.skippingEvent = true;
    }
  }
}
