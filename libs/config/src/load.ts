import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { LineCounter, parseDocument } from 'yaml';
import { ConfigError, describeIssue, problemAt, problemsFromIssues } from './config-error';
import { deepFreeze, findProtoKeys } from './freeze';
import { KeymeshConfigSchema, type KeymeshConfig } from './schema';

// Anchors are handy for shared limits; a bounded alias count stops a "billion laughs" file.
const MAX_ALIAS_COUNT = 100;

/** YAML problems as `file:line:col: message`. The YAML text is never quoted beyond a key name. */
function yamlProblems(yamlText: string, sourceName: string): { data: unknown; problems: string[] } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(yamlText, { lineCounter, prettyErrors: false, uniqueKeys: true, merge: true });
  if (doc.errors.length > 0) {
    const problems = doc.errors.map((error) => {
      const { line, col } = lineCounter.linePos(error.pos[0]);
      let message = error.message;
      if (error.code === 'DUPLICATE_KEY') {
        // pos marks only the key's first character; the key runs to its ":".
        const key = /^[^:\n]*/.exec(yamlText.slice(error.pos[0]))![0].trim().slice(0, 64);
        message = `duplicate key ${JSON.stringify(key)}`;
      } else if (error.code === 'MULTIPLE_DOCS') {
        message = 'expected one YAML document, found several ("---")';
      }
      return `${sourceName}:${line}:${col}: ${message}`;
    });
    return { data: undefined, problems };
  }
  try {
    return { data: doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT }), problems: [] };
  } catch (error) {
    // toJS throws only on alias abuse (too many or undefined aliases).
    return { data: undefined, problems: [`${sourceName}: ${(error as Error).message}`] };
  }
}

/**
 * Parses and validates a whole config file. Throws one ConfigError listing every
 * problem (YAML syntax first; if the YAML is readable, every schema and
 * reference problem). The result is deeply frozen.
 */
export function parseConfig(yamlText: string, sourceName: string): KeymeshConfig {
  const { data, problems } = yamlProblems(yamlText, sourceName);
  if (problems.length > 0) throw new ConfigError(problems);
  if (data === null || data === undefined) {
    throw new ConfigError([`${sourceName}: the file is empty; expected a mapping with providers, pools, routes and tenants`]);
  }
  for (const path of findProtoKeys(data)) problems.push(problemAt(sourceName, path, '"__proto__" is not allowed as a name'));
  const result = KeymeshConfigSchema.safeParse(data, { error: describeIssue });
  if (!result.success) problems.push(...problemsFromIssues(sourceName, result.error.issues));
  if (problems.length > 0 || !result.success) throw new ConfigError(problems);
  return deepFreeze(result.data);
}

/** Reads and parses a config file; problems name the file by its base name. */
export async function loadConfigFile(path: string): Promise<KeymeshConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ConfigError([`${path}: no such file`], { cause: error });
    throw new ConfigError([`${path}: cannot read the file (${code ?? (error as Error).message})`], { cause: error });
  }
  return parseConfig(text, basename(path));
}
