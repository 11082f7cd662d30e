import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Daemons often live in sbin, which is not on every user's PATH. */
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/**
 * Absolute path of executable `name`, searched on PATH then the usual bin and
 * sbin dirs; throws naming the Debian package to install when it is missing.
 */
export function findBinary(name: string, debianPackage: string, searchPath = process.env['PATH'] ?? ''): string {
  const dirs = [...searchPath.split(delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  throw new Error(
    `${name} not found on PATH or in ${EXTRA_DIRS.join(', ')}: install the Debian package ` +
      `${debianPackage} (sudo apt-get install -y ${debianPackage})`,
  );
}
