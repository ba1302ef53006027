/** Which backend a name, a Django dotted path or a `pkg#Export` specifier means; getConnection(). */
import { createRequire } from 'node:module';
import { isAbsolute, join, resolve as resolvePath } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ConfigError, coerceError } from '../errors.js';
import type { EmailMessage } from '../message.js';
import { settings } from '../settings.js';
import { type BackendOptions, BaseEmailBackend, type DeliverOptions, type DeliveryOutcome } from './base.js';
import { ConsoleBackend } from './console.js';
import { DummyBackend } from './dummy.js';
import { FileBackend } from './file.js';
import { MemoryBackend } from './memory.js';
import { SmtpBackend } from './smtp.js';

/** Options handed to a backend factory: failSilently plus whatever the backend understands. */
export type ConnectionOptions = BackendOptions & Record<string, unknown>;

/** Builds a backend from options. */
export type BackendFactory = (options: ConnectionOptions) => BaseEmailBackend;

/** A backend class whose constructor takes one options object. */
export type BackendClass = new (options?: ConnectionOptions) => BaseEmailBackend;

const registry = new Map<string, BackendFactory>([
  ['smtp', (options) => new SmtpBackend(options)],
  ['console', (options) => new ConsoleBackend(options)],
  ['file', (options) => new FileBackend(options)],
  ['memory', (options) => new MemoryBackend(options)],
  ['dummy', (options) => new DummyBackend(options)],
]);

// Django's dotted paths and aliases for the built-in backends, so existing settings keep working.
const ALIASES: Record<string, string> = {
  locmem: 'memory',
  filebased: 'file',
  'django.core.mail.backends.smtp.EmailBackend': 'smtp',
  'django.core.mail.backends.console.EmailBackend': 'console',
  'django.core.mail.backends.filebased.EmailBackend': 'file',
  'django.core.mail.backends.locmem.EmailBackend': 'memory',
  'django.core.mail.backends.dummy.EmailBackend': 'dummy',
};

/**
 * Registers a backend under a name usable in getConnection(name) and EMAIL_BACKEND. A class or a
 * factory function is accepted. Re-registering a name replaces it.
 */
export function registerBackend(name: string, backend: BackendFactory | BackendClass): void {
  if (typeof name !== 'string' || name === '')
    throw new ConfigError('registerBackend(): name must be a non-empty string');
  registry.set(name, isClass(backend) ? (options) => new backend(options) : backend);
}

/** Names getConnection() understands without a module specifier. */
export function registeredBackends(): string[] {
  return [...registry.keys()];
}

function isClass(value: unknown): value is BackendClass {
  return typeof value === 'function' && /^class[\s{]/.test(Function.prototype.toString.call(value));
}

/**
 * Django's get_connection(): a backend instance, not yet connected. `backend` is a registered name
 * (`smtp`, `console`, `file`, `memory`, `dummy`, `queue` once @mailroom/producer is imported...), a
 * module specifier `pkg/path#Export` or `./file.js#Export` (loaded on first use), or a backend class;
 * default EMAIL_BACKEND. The options go to the backend's constructor.
 */
export function getConnection(options?: ConnectionOptions): BaseEmailBackend;
export function getConnection(
  backend?: string | BackendClass | null,
  options?: ConnectionOptions,
): BaseEmailBackend;
export function getConnection(
  backendOrOptions?: string | BackendClass | ConnectionOptions | null,
  maybeOptions: ConnectionOptions = {},
): BaseEmailBackend {
  let backend: string | BackendClass | null | undefined;
  let options = maybeOptions;
  if (backendOrOptions !== null && typeof backendOrOptions === 'object') options = backendOrOptions;
  else backend = backendOrOptions;
  const chosen = backend ?? settings.EMAIL_BACKEND;
  if (typeof chosen === 'function') return new chosen(options);
  const name = ALIASES[chosen] ?? chosen;
  const factory = registry.get(name);
  if (factory) return factory(options);
  if (chosen.includes('#')) return new ModuleBackend(chosen, options);
  const hint = name === 'queue' ? " (import '@mailroom/producer' once at start-up to register it)" : '';
  throw new ConfigError(
    `Unknown email backend ${JSON.stringify(chosen)}${hint}; known: ${registeredBackends().join(', ')}, or a module specifier "pkg/path#Export"`,
  );
}

/** getConnection() and open() in one step, for `await using conn = await openConnection()`. */
export async function openConnection(
  backend?: string | BackendClass | null,
  options: ConnectionOptions = {},
): Promise<BaseEmailBackend> {
  const connection = getConnection(backend, options);
  await connection.open();
  return connection;
}

async function importSpecifier(specifier: string): Promise<Record<string, unknown>> {
  if (specifier.startsWith('.') || isAbsolute(specifier)) {
    return import(pathToFileURL(resolvePath(specifier)).href);
  }
  try {
    return await import(specifier);
  } catch (error) {
    // A bare specifier is looked up from the application (the working directory) as well, since
    // @mailroom/core itself does not depend on the package that holds the backend.
    const appRequire = createRequire(join(process.cwd(), 'package.json'));
    try {
      return await import(pathToFileURL(appRequire.resolve(specifier)).href);
    } catch {
      throw error;
    }
  }
}

/** A backend named by a module specifier, loaded on first use and delegated to. */
class ModuleBackend extends BaseEmailBackend {
  readonly #specifier: string;
  readonly #options: ConnectionOptions;
  #inner: Promise<BaseEmailBackend> | undefined;
  #loaded: BaseEmailBackend | undefined;

  constructor(specifier: string, options: ConnectionOptions) {
    super(options);
    this.#specifier = specifier;
    this.#options = options;
  }

  private load(): Promise<BaseEmailBackend> {
    this.#inner ??= (async () => {
      const [path, named] = this.#specifier.split('#') as [string, string?];
      // `pkg/path#` names no export: use the default one (split() yields '' there, never undefined).
      const exportName = named || 'default';
      let module: Record<string, unknown>;
      try {
        module = await importSpecifier(path);
      } catch (error) {
        throw new ConfigError(
          `Cannot load email backend module ${JSON.stringify(path)}: ${coerceError(error).message}`,
          {
            cause: error,
          },
        );
      }
      const exported = module[exportName];
      if (typeof exported !== 'function') {
        throw new ConfigError(
          `Email backend module ${JSON.stringify(path)} has no class or factory export ${JSON.stringify(exportName)}`,
        );
      }
      const instance = isClass(exported)
        ? new exported(this.#options)
        : (exported as BackendFactory)(this.#options);
      if (!(instance instanceof BaseEmailBackend)) {
        throw new ConfigError(`${this.#specifier} did not produce an email backend (a BaseEmailBackend)`);
      }
      this.#loaded = instance;
      return instance;
    })();
    return this.#inner;
  }

  override get isOpen(): boolean {
    return this.#loaded?.isOpen ?? false;
  }
  override async open(): Promise<boolean | undefined> {
    return (await this.load()).open();
  }
  override async close(): Promise<void> {
    await this.#loaded?.close();
  }
  override async sendMessages(messages: readonly EmailMessage[]): Promise<number> {
    if (messages.length === 0) return 0;
    return (await this.load()).sendMessages(messages);
  }
  override async deliver(message: EmailMessage, options?: DeliverOptions): Promise<DeliveryOutcome> {
    return (await this.load()).deliver(message, options);
  }
  protected override deliverRendered(): Promise<DeliveryOutcome> {
    throw new Error('unreachable: ModuleBackend delegates deliver()');
  }
}
