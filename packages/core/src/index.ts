/** The public API of @mailroom/core: the django.core.mail port, settings and the wire format. */
export { envelopeAddress, type ParsedAddress, parseAddress, parseAddressList } from './address.js';
export {
  type BackendOptions,
  BaseEmailBackend,
  type DeliverOptions,
  type DeliverStreamOptions,
  type DeliverStreamResult,
  type DeliveryOutcome,
  deliveredOutcome,
  type Envelope,
  failedOutcome,
  type RecipientRefusal,
  type SettleItem,
  type StreamItem,
  type StreamSource,
} from './backends/base.js';
export { ConsoleBackend, type ConsoleBackendOptions } from './backends/console.js';
export { DummyBackend } from './backends/dummy.js';
export { FileBackend, type FileBackendOptions } from './backends/file.js';
export { MemoryBackend, outbox, resetOutbox } from './backends/memory.js';
export {
  type BackendClass,
  type BackendFactory,
  type ConnectionOptions,
  getConnection,
  openConnection,
  registerBackend,
  registeredBackends,
} from './backends/registry.js';
export { DEFAULT_PIPELINE_WINDOW, SmtpBackend, type SmtpBackendOptions } from './backends/smtp.js';
export { type Classification, classifyDeliveryError, type FailureReason, isHardBounce } from './classify.js';
export {
  createDkimSigner,
  DKIM_SIGNED_HEADERS,
  type DkimOptions,
  type DkimSigner,
  validateDkimDomain,
  validateDkimSelector,
} from './dkim.js';
export {
  BadHeaderError,
  ConfigError,
  coerceError,
  DeliveryError,
  InvalidAddressError,
  MailError,
  type MailErrorDetails,
  quoteValue,
  ValidationError,
} from './errors.js';
export { MAX_HEADER_VALUE } from './header-text.js';
export { formatDate, makeMessageId } from './headers.js';
export {
  type MailAdminsOptions,
  type MassMailTuple,
  mailAdmins,
  mailManagers,
  type SendMailOptions,
  type SendMassMailOptions,
  sendMail,
  sendMassMail,
} from './mail.js';
export {
  type AlternativeInput,
  type AttachmentContent,
  type AttachmentInput,
  EmailAlternative,
  EmailAttachment,
  EmailMessage,
  type EmailMessageOptions,
  EmailMultiAlternatives,
  type EmailMultiAlternativesOptions,
  type HeaderValue,
  MAX_MESSAGE_NESTING,
  MimePart,
  type MimePartOptions,
} from './message.js';
export { DEFAULT_ATTACHMENT_MIME_TYPE, guessMimeType } from './mimetypes.js';
export { QUEUE_NAME_RULE, validateQueueName } from './queue-name.js';
export {
  invalidValue,
  parseDuration,
  parsePort,
  parsePositiveInteger,
  parseRateLimit,
  type RateLimit,
} from './setting-values.js';
export {
  configure,
  defaultSettings,
  readSettings,
  resetSettings,
  type SettingInput,
  type Settings,
  settings,
} from './settings.js';
export { framePayload, MAX_LINE_OCTETS, type PayloadMode } from './smtp/payload.js';
export { ReplyParser, type SmtpReply } from './smtp/reply.js';
export {
  type SettleTransaction,
  type SmtpAuth,
  type SmtpExtensions,
  type SmtpMessageTransaction,
  SmtpSession,
  type SmtpSessionOptions,
  type SmtpSettledTransaction,
  type SmtpTransaction,
  type StreamResult,
  type TransactionSource,
} from './smtp/session.js';
export {
  checkWireVersion,
  decodeWire,
  fromWire,
  parseWith,
  type ToWireOptions,
  toWire,
  WIRE_VERSION,
  type WireAttachment,
  type WireAttachmentContent,
  type WireContent,
  type WireHeaderValue,
  type WireMessage,
  type WireMessageBody,
  wireMessageSchema,
} from './wire.js';
