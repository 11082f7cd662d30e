export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

/**
 * JSON lines on stderr. Callers pass ids, never secrets; an Error's message is
 * kept but its stack only at debug, since provider SDK errors can quote
 * request headers.
 */
export function createLogger(service: string, level: LogLevel = (process.env.KEYMESH_LOG_LEVEL as LogLevel) || 'info'): Logger {
  const threshold = LEVELS[level] ?? LEVELS.info;
  const write = (lvl: LogLevel, message: string, fields?: Record<string, unknown>): void => {
    if (LEVELS[lvl] < threshold) return;
    const line: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, service, message };
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        line[k] = v instanceof Error ? { name: v.name, message: v.message, ...(threshold <= LEVELS.debug ? { stack: v.stack } : {}) } : v;
      }
    }
    process.stderr.write(JSON.stringify(line) + '\n');
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
  };
}
