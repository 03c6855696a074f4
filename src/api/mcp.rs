//! MCP for agents at `/mcp`: the official Rust SDK's (rmcp) streamable HTTP
//! server, mounted in our router. Stateless (no MCP session to pin a client
//! to one replica): each POST is a JSON-RPC request answered on its own.
//!
//! Every request carries `Authorization: Bearer KEY` (a key with the
//! `agent` role or above; 401/403 at the HTTP level otherwise). Each tool is
//! one call of the HTTP API made on the caller's behalf — the same key, so
//! the same tenant, the same agent binding (a key bound to an agent cannot
//! reach another agent's memories), the same validation and rate limits —
//! and its answer is the route's JSON. An error of the route is a tool
//! error (`isError`) whose text is `{"code", "message"}`, our codes.
//!
//! `Host` is not checked against a list (rmcp's guard against DNS
//! rebinding of unauthenticated local servers): every request needs a key,
//! and behind a proxy the host is the deployment's own.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::Method;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::Extension;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::batch::{as_sent_alone, caller_headers, send_inner};

/// The `/mcp` service over `api` (the router its tools call), behind the
/// key check.
pub fn service(state: AppState, api: Router) -> Router {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts();
    let mcp = StreamableHttpService::new(
        move || Ok(Crm::new(api.clone())),
        LocalSessionManager::default().into(),
        config,
    );
    Router::new()
        .nest_service("/mcp", mcp)
        .layer(axum::middleware::from_fn_with_state(state, require_key))
}

/// 401/403 before MCP sees the request: a key with the `agent` role.
async fn require_key(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    if let Err(e) = super::auth::AgentKey::from_request_parts(&mut parts, &st).await {
        return e.into_response();
    }
    next.run(Request::from_parts(parts, body)).await
}

/// The MCP server: its tools call `api`.
#[derive(Clone)]
pub struct Crm {
    api: Router,
    tool_router: ToolRouter<Self>,
}

/// `search_contacts`' arguments.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchContacts {
    /// What to look for: a name (typos and prefixes are fine), an email, a
    /// phone number, a company or a city, or words of the notes.
    pub q: String,
    /// Only contacts whose fields have these values, e.g.
    /// {"lifecycle_stage": ["lead", "customer"], "country": "PL"}. Fields:
    /// lifecycle_stage, owner_id, tags, city, country, company_name,
    /// company_id; created_at/updated_at take {"gte": "2025-01-01"}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Value>,
    /// How many contacts to return (1–100; 10 if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub limit: Option<u32>,
    /// Skip this many of the best matches (to page on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u32>,
    /// Read at least this position: the `lsn` a write returned (to see it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lsn: Option<String>,
}

/// `get_contact_context`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContactContext {
    /// The contact's id (a UUID, as search_contacts returns it).
    pub contact_id: String,
    /// Whose memories to include (the key's own agent when it is bound to
    /// one).
    #[serde(default)]
    pub agent_id: Option<String>,
    /// What to rank the contact's memories against (optional).
    #[serde(default)]
    pub q: Option<String>,
    /// Most tokens the answer's `prompt` may use (the card first, then the
    /// best memories that fit).
    #[serde(default)]
    pub token_budget: Option<u32>,
}

/// The kinds of memory.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Something true about the subject ("Anna's company has 40 seats").
    Fact,
    /// How the subject likes things ("Anna prefers email to calls").
    Preference,
    /// Something that happened ("call on 3 May: asked for a discount").
    Episode,
    /// A summary of several memories or a conversation.
    Summary,
}

/// `remember`'s arguments.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Remember {
    /// The agent the memory belongs to (a bound key can only write its own).
    pub agent_id: String,
    /// What to remember, as a sentence that stands on its own.
    pub content: String,
    pub kind: Kind,
    /// Whom it is about, e.g. a contact id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// The conversation it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// 0 (trivia) to 1 (must not be forgotten); 0.5 if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub importance: Option<f32>,
    /// Free-form JSON kept with the memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// When it stops being true (RFC 3339), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// How `recall` matches.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// By meaning (the embedding of `query`).
    Semantic,
    /// By words.
    Keyword,
    /// Both, fused (the default).
    Hybrid,
}

/// `recall`'s arguments.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Recall {
    /// What the agent wants to know, in words.
    pub query: String,
    /// Whose memories (the key's own agent when it is bound to one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Only memories about this subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject_id: Option<String>,
    /// Only memories of this conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Only these kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<Kind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Only memories made since this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// How many memories at most (1–100; 10 if absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub top_k: Option<u32>,
    /// Most tokens the memories' contents may use together; the best that
    /// fit are returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_budget: Option<u32>,
    /// Read at least this position: the `lsn` that `remember` returned (to
    /// recall what was just stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_lsn: Option<String>,
}

/// `forget`'s arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Forget {
    /// The memory's id (as `remember` or `recall` returned it).
    pub id: String,
}

#[tool_router]
impl Crm {
    fn new(api: Router) -> Self {
        Self {
            api,
            tool_router: Self::tool_router(),
        }
    }

    /// Calls the API on the caller's behalf; its answer or its error as the
    /// tool's result.
    async fn call(
        &self,
        parts: &Parts,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<CallToolResult, ErrorData> {
        let headers = caller_headers(parts);
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned();
        let id = parts
            .headers
            .get(&super::http::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let req = as_sent_alone(&headers, peer, method, path, body.as_ref(), id);
        let (status, answer) = send_inner(self.api.clone(), req)
            .await
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        if (200..300).contains(&status) {
            Ok(CallToolResult::success(vec![ContentBlock::text(
                answer.to_string(),
            )]))
        } else {
            // our error body `{"error": {"code", "message"}}`, as the tool's
            let error = answer.get("error").cloned().unwrap_or(answer);
            Ok(CallToolResult::error(vec![ContentBlock::text(
                json!({"status": status, "code": error["code"], "message": error["message"]})
                    .to_string(),
            )]))
        }
    }

    #[tool(
        description = "Search the CRM's contacts as a person types: fuzzy on names (typos, prefixes, nicknames, accents), emails, phones, companies and cities. Returns the best matches with their fields and the exact total.",
        annotations(read_only_hint = true)
    )]
    async fn search_contacts(
        &self,
        Parameters(p): Parameters<SearchContacts>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut body = serde_json::to_value(&p).unwrap_or_default();
        if p.limit.is_none() {
            body["limit"] = json!(10);
        }
        self.call(&parts, Method::POST, "/v1/contacts/search", Some(body))
            .await
    }

    #[tool(
        description = "Everything an agent needs about one contact, packed into a token budget: the contact card, its company, and its most relevant memories, with a ready `prompt` block.",
        annotations(read_only_hint = true)
    )]
    async fn get_contact_context(
        &self,
        Parameters(p): Parameters<ContactContext>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let mut path = format!("/v1/contacts/{}/context?", enc(&p.contact_id));
        if let Some(a) = &p.agent_id {
            path.push_str(&format!("agent_id={}&", enc(a)));
        }
        if let Some(q) = &p.q {
            path.push_str(&format!("q={}&", enc(q)));
        }
        if let Some(b) = p.token_budget {
            path.push_str(&format!("token_budget={b}&"));
        }
        path.pop();
        self.call(&parts, Method::GET, &path, None).await
    }

    #[tool(
        description = "Store a memory for an agent: a fact, preference, episode or summary about a subject. A near-duplicate of an existing memory of the same agent and subject updates it instead. Returns the memory's id and the position (`lsn`) to read it back at."
    )]
    async fn remember(
        &self,
        Parameters(p): Parameters<Remember>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let body = serde_json::to_value(&p).unwrap_or_default();
        self.call(&parts, Method::POST, "/v1/memories", Some(body))
            .await
    }

    #[tool(
        description = "Recall an agent's memories relevant to a question, by meaning, by keyword or both, ranked with recency and importance, the best that fit a token budget. Each memory carries its score and how it was made (semantic, keyword, recency, importance).",
        annotations(read_only_hint = true)
    )]
    async fn recall(
        &self,
        Parameters(p): Parameters<Recall>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let body = serde_json::to_value(&p).unwrap_or_default();
        self.call(&parts, Method::POST, "/v1/memories/search", Some(body))
            .await
    }

    #[tool(
        description = "Forget a memory for good, by its id.",
        annotations(destructive_hint = true, idempotent_hint = true)
    )]
    async fn forget(
        &self,
        Parameters(p): Parameters<Forget>,
        Extension(parts): Extension<Parts>,
    ) -> Result<CallToolResult, ErrorData> {
        let enc = utf8_percent_encode(&p.id, NON_ALPHANUMERIC).to_string();
        self.call(&parts, Method::DELETE, &format!("/v1/memories/{enc}"), None)
            .await
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for Crm {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("crmsearch", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "CRM contacts and an agent memory. search_contacts finds people; \
                 get_contact_context packs one contact and its memories for a prompt; \
                 remember, recall and forget manage the agent's memories.",
            )
    }
}
