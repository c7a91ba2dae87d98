// Types of @pag0/client (src/index.js is plain ESM; these are maintained by hand beside it).

export declare const VERSION: string;
export declare const APPROVALS_PATH: "/pag0/approvals/";

/** How long and how often to poll for a decision (exponential backoff, overall deadline). */
export interface ApprovalWait {
  /** Overall deadline in ms (default 900000); then ApprovalTimeout, the approval stays pending. */
  timeoutMs?: number;
  /** First poll after this many ms (default 500). */
  initialDelayMs?: number;
  /** Cap of one delay in ms (default 10000). */
  maxDelayMs?: number;
  /** Each next delay is this times the previous (default 2). */
  multiplier?: number;
}

/** What a `202` said; passed to `onPending` before waiting. */
export interface Pending {
  approvalId: string;
  projectId: string | null;
  /** Integer micro-USD. */
  estimatedCostMicros: bigint | null;
  expiresAt: string | null;
  body: unknown;
}

export interface Pag0RequestOptions {
  justification?: string;
  requestedBy?: string;
  requiresApproval?: boolean;
  wait?: ApprovalWait;
}

export interface Pag0Options extends Pag0RequestOptions {
  /** The client's key, sent as `x-pag0-api-key`. */
  apiKey: string;
  /** The Pag0 proxy (Envoy), `http(s)://host[:port]`; the request URL's host goes in `Host`. */
  proxyUrl?: string;
  onPending?: (pending: Pending) => void;
}

export type Pag0RequestInit = RequestInit & { pag0?: Pag0RequestOptions };
export type Pag0Fetch = (input: string | URL | Request, init?: Pag0RequestInit) => Promise<Response>;

export declare function createPag0Fetch(options: Pag0Options): Pag0Fetch;

export interface Pag0ErrorFields {
  code?: string;
  status?: number | null;
  scope?: string | null;
  projectId?: string | null;
  approvalId?: string | null;
  body?: unknown;
}

/** A refusal of Pag0 (SPEC §5 wire code in `code`) or an approval that cannot be used. */
export declare class Pag0Error extends Error {
  constructor(message: string, fields?: Pag0ErrorFields);
  static code?: string;
  code: string;
  /** HTTP status of the refusal; null when raised by the helper (ApprovalTimeout). */
  status: number | null;
  /** The budget that lacked room (`project.monthly`, `org.daily`, ...). */
  scope: string | null;
  projectId: string | null;
  approvalId: string | null;
  body: unknown;
}
export declare class AuthenticationFailed extends Pag0Error {}
export declare class MissingApiKey extends AuthenticationFailed {}
export declare class UnknownApiKey extends AuthenticationFailed {}
export declare class EndpointBlocked extends Pag0Error {}
export declare class EndpointNotAllowed extends Pag0Error {}
export declare class CategoryNotAllowed extends Pag0Error {}
export declare class OutsideWorkingHours extends Pag0Error {}
export declare class MaxPerRequestExceeded extends Pag0Error {}
export declare class BudgetExceeded extends Pag0Error {}
export declare class ApprovalError extends Pag0Error {}
export declare class ApprovalDenied extends ApprovalError {}
export declare class ApprovalExpired extends ApprovalError {}
export declare class ApprovalMismatch extends ApprovalError {}
export declare class ApprovalUsed extends ApprovalError {}
export declare class ApprovalPending extends ApprovalError {}
export declare class ApprovalRequired extends ApprovalError {}
export declare class ApprovalTimeout extends ApprovalError {}
export declare class ApprovalLookupFailed extends ApprovalError {}
export declare class ControlPlaneUnavailable extends Pag0Error {}
export declare class BodyTooLarge extends Pag0Error {}
export declare class BadRequestBody extends Pag0Error {}

export declare function isRefusal(status: number, headers: Headers): boolean;
export declare function errorFrom(status: number, headers: Headers, bodyText: string): Pag0Error;
