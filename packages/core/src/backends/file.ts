/** The file backend: the console output, one .log file per backend instance in EMAIL_FILE_PATH. */
import { randomBytes } from 'node:crypto';
import { accessSync, constants, mkdirSync, statSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ConfigError, DeliveryError } from '../errors.js';
import { settings } from '../settings.js';
import {
  type BackendOptions,
  BaseEmailBackend,
  type DeliveryOutcome,
  deliveredOutcome,
  type Envelope,
} from './base.js';
import { consoleRecord } from './console.js';

/** Options of {@link FileBackend}. */
export interface FileBackendOptions extends BackendOptions {
  /** Directory of the .log files. Default EMAIL_FILE_PATH. */
  filePath?: string | null;
}

const pad = (n: number) => String(n).padStart(2, '0');

/**
 * Django's file backend: the console output, appended to ONE `.log` file per backend instance
 * (`YYYYMMDD-HHMMSS-<unique>.log` in filePath), created on first open and reused by later opens. The
 * directory is created; a path that is a file or is not writable is a {@link ConfigError} at construction.
 */
export class FileBackend extends BaseEmailBackend {
  readonly filePath: string;
  #fileName: string | undefined;
  #handle: FileHandle | undefined;

  constructor(options: FileBackendOptions = {}) {
    super(options);
    const path = options.filePath ?? settings.EMAIL_FILE_PATH;
    if (!path)
      throw new ConfigError('The file backend needs a directory: set EMAIL_FILE_PATH or pass filePath');
    this.filePath = resolve(path);
    let stats: ReturnType<typeof statSync> | undefined;
    try {
      stats = statSync(this.filePath);
    } catch {
      stats = undefined;
    }
    if (stats && !stats.isDirectory()) {
      throw new ConfigError(
        `Path for saving email messages exists, but is not a directory: ${this.filePath}`,
      );
    }
    try {
      mkdirSync(this.filePath, { recursive: true });
      accessSync(this.filePath, constants.W_OK);
    } catch (error) {
      throw new ConfigError(`Could not write to directory: ${this.filePath}`, { cause: error });
    }
  }

  /** The file this backend writes to (fixed on first open). */
  get fileName(): string {
    if (!this.#fileName) {
      const now = new Date();
      const stamp = `${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}-${pad(now.getHours())}${pad(now.getMinutes())}${pad(now.getSeconds())}`;
      this.#fileName = join(this.filePath, `${stamp}-${randomBytes(6).toString('hex')}.log`);
    }
    return this.#fileName;
  }

  override async open(): Promise<boolean | undefined> {
    if (this.#handle) return false;
    try {
      this.#handle = await open(this.fileName, 'a');
    } catch (error) {
      const failure = new DeliveryError(`Could not open ${this.fileName} for writing`, {
        code: 'EFILE',
        cause: error,
      });
      if (this.failSilently) {
        this.lastOpenError = failure;
        return undefined;
      }
      throw failure;
    }
    await super.open();
    return true;
  }

  override async close(): Promise<void> {
    const handle = this.#handle;
    this.#handle = undefined;
    await super.close();
    await handle?.close();
  }

  protected override async deliverRendered(envelope: Envelope, bytes: Buffer): Promise<DeliveryOutcome> {
    if (!this.#handle) throw new DeliveryError('The file backend is not open', { code: 'ECONNECTION' });
    await this.#handle.appendFile(consoleRecord(bytes));
    return deliveredOutcome(envelope);
  }
}
