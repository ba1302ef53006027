/** The convenience functions of django.core.mail: sendMail, sendMassMail, mailAdmins, mailManagers. */
import type { BaseEmailBackend } from './backends/base.js';
import { getConnection } from './backends/registry.js';
import { EmailMessage, EmailMultiAlternatives } from './message.js';
import { settings } from './settings.js';

/** Options of {@link sendMail}. */
export interface SendMailOptions {
  failSilently?: boolean;
  /** SMTP user for this call (default EMAIL_HOST_USER). */
  authUser?: string | null;
  /** SMTP password for this call (default EMAIL_HOST_PASSWORD). */
  authPassword?: string | null;
  /** Backend to use instead of a new getConnection(). */
  connection?: BaseEmailBackend | null;
  /** When given, the message is multipart/alternative with this text/html part. */
  htmlMessage?: string | null;
}

/** Options of {@link sendMassMail}. */
export type SendMassMailOptions = Omit<SendMailOptions, 'htmlMessage'>;

/** Options of {@link mailAdmins} and {@link mailManagers}. */
export type MailAdminsOptions = Pick<SendMailOptions, 'failSilently' | 'connection' | 'htmlMessage'>;

/** One entry of {@link sendMassMail}: `[subject, message, fromEmail, recipientList]`. */
export type MassMailTuple = [
  subject: string,
  message: string,
  fromEmail: string | null,
  recipientList: readonly string[],
];

function connectionFor(options: SendMassMailOptions): BaseEmailBackend {
  if (options.connection) return options.connection;
  return getConnection({
    failSilently: options.failSilently ?? false,
    ...(options.authUser != null ? { username: options.authUser } : {}),
    ...(options.authPassword != null ? { password: options.authPassword } : {}),
  });
}

function requireList(value: unknown, argument: string): void {
  if (typeof value === 'string')
    throw new TypeError(`${argument} must be an array of addresses, not a string`);
}

/**
 * Django's send_mail(): one message to recipientList (everyone sees the To list). Returns the number
 * sent (0 or 1); an empty recipient list returns 0 without connecting.
 */
export async function sendMail(
  subject: string,
  message: string,
  fromEmail: string | null,
  recipientList: readonly string[],
  options: SendMailOptions = {},
): Promise<number> {
  requireList(recipientList, 'recipientList');
  const connection = connectionFor(options);
  const mail = new EmailMultiAlternatives(subject, message, fromEmail, recipientList, { connection });
  if (options.htmlMessage) mail.attachAlternative(options.htmlMessage, 'text/html');
  return mail.send();
}

/**
 * Django's send_mass_mail(): one message per tuple, all over ONE connection and one sendMessages
 * call. Returns the number sent.
 */
export async function sendMassMail(
  datatuple: readonly MassMailTuple[],
  options: SendMassMailOptions = {},
): Promise<number> {
  const connection = connectionFor(options);
  const messages = datatuple.map(([subject, body, fromEmail, recipientList], index) => {
    requireList(recipientList, `datatuple[${index}].recipientList`);
    return new EmailMessage(subject, body, fromEmail, recipientList, { connection });
  });
  return connection.sendMessages(messages);
}

async function mailStaff(
  recipients: readonly string[],
  subject: string,
  message: string,
  options: MailAdminsOptions,
): Promise<number> {
  if (recipients.length === 0) return 0;
  const mail = new EmailMultiAlternatives(
    `${settings.EMAIL_SUBJECT_PREFIX}${subject}`,
    message,
    settings.SERVER_EMAIL,
    recipients,
    { connection: options.connection ?? null },
  );
  if (options.htmlMessage) mail.attachAlternative(options.htmlMessage, 'text/html');
  return mail.send(options.failSilently ?? false);
}

/** Django's mail_admins(): one message to ADMINS from SERVER_EMAIL, subject prefixed; nothing when ADMINS is empty. */
export function mailAdmins(
  subject: string,
  message: string,
  options: MailAdminsOptions = {},
): Promise<number> {
  return mailStaff(settings.ADMINS, subject, message, options);
}

/** Django's mail_managers(): as mailAdmins, to MANAGERS. */
export function mailManagers(
  subject: string,
  message: string,
  options: MailAdminsOptions = {},
): Promise<number> {
  return mailStaff(settings.MANAGERS, subject, message, options);
}
