//! Peers first: the agents of one region serve each other the chunks they hold, so a model
//! that eight nodes start at once is read from the origin about once, not eight times.
//!
//! - **Who holds what** is in the store: each agent writes, per cached file, the chunk indexes
//!   in place on its node (`Keys::holder`, on its lease: a node that dies stops being asked).
//! - **Origin once per region**: a chunk no peer holds is fetched from the origin by the node
//!   that first writes its claim (`Keys::origin_fetch`, create-only, on its lease, kept after the
//!   chunk lands); the others put it off and take it from that node once it lands (or claim it
//!   themselves if the claimer's fetch fails or its lease goes). So no chunk is taken from the
//!   origin twice while a peer has it or is getting it; only when every peer holding a chunk
//!   fails to serve it is the origin asked again.
//! - **Serving** ([`serve`]): `GET /v1/chunks/{file}/{index}?offset=&len=&digest=` with the
//!   region's peer credential (minted by fleetd, given to the agents of that region only; compared
//!   in constant time). Every chunk is read back and checked before it is sent; a node serves
//!   partly fetched files too (the chunks in place).
//! - **Wrong bytes** from a peer are detected (the digest), fetched elsewhere, logged, and the
//!   peer is avoided for a while ([`Swarm::strike`]).
//! - **Bandwidth caps**: what a node serves, in bytes per second over all its peers, and what it
//!   fetches ([`RateLimit`]); at most [`PER_PEER`] chunks from one peer at once.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use fleet_core::artifact::Digest;
use fleet_core::keys::Keys;
use fleet_core::{NodeId, Secret};
use fleet_state::model::HolderRecord;
use fleet_state::store::{Compare, LeaseId, Op, Store};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use super::source::{ChunkAt, ChunkSource, FetchError, Strike};
use super::{Cache, CacheError, Exchange, Route};

/// Chunks one node fetches from one peer at once.
pub const PER_PEER: usize = 2;
/// Peers asked for one chunk before the next try (each checked; the next on failure).
const PEERS_PER_CHUNK: usize = 3;
/// How long a peer that failed is passed over.
const AVOID_FOR: Duration = Duration::from_secs(30);

/// A token bucket: `take(n)` waits until `n` bytes fit under `per_s` bytes per second (bursts of
/// up to one second's worth).
pub struct RateLimit {
    per_s: f64,
    state: tokio::sync::Mutex<(tokio::time::Instant, f64)>,
}

impl RateLimit {
    pub fn new(per_s: u64) -> RateLimit {
        RateLimit { per_s: per_s as f64, state: tokio::sync::Mutex::new((tokio::time::Instant::now(), per_s as f64)) }
    }

    pub async fn take(&self, n: u64) {
        let wait = {
            let mut s = self.state.lock().await;
            let now = tokio::time::Instant::now();
            let tokens = (s.1 + now.duration_since(s.0).as_secs_f64() * self.per_s).min(self.per_s) - n as f64;
            *s = (now, tokens);
            if tokens < 0.0 { Duration::from_secs_f64(-tokens / self.per_s) } else { Duration::ZERO }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder().status(status).body(Full::new(body.into()).boxed()).expect("a valid response")
}

/// What a node has served its peers.
#[derive(Default)]
pub struct Served {
    pub chunks: AtomicU64,
    pub bytes: AtomicU64,
}

/// Serves this node's cached chunks to its region's peers on `listener` (plain HTTP/1.1: peers
/// meet on the region's private network; the credential keeps everyone else out).
pub async fn serve(
    listener: tokio::net::TcpListener,
    cache: Cache,
    token: Secret,
    limit: Option<Arc<RateLimit>>,
    served: Arc<Served>,
) {
    let ctx = Arc::new((cache, token, limit, served));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &ctx.0, &ctx.1, ctx.2.as_deref(), &ctx.3).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn parse_chunk(req: &Request<Incoming>) -> Option<ChunkAt> {
    let rest = req.uri().path().strip_prefix("/v1/chunks/")?;
    let (file, index) = rest.split_once('/')?;
    let mut q: HashMap<&str, &str> = HashMap::new();
    for kv in req.uri().query().unwrap_or("").split('&') {
        let (k, v) = kv.split_once('=')?;
        q.insert(k, v);
    }
    let len: u64 = q.get("len")?.parse().ok()?;
    if len == 0 || len > fleet_core::artifact::MAX_CHUNK_SIZE {
        return None;
    }
    Some(ChunkAt {
        file: Digest::from_hex(file).ok()?,
        index: index.parse().ok()?,
        offset: q.get("offset")?.parse().ok()?,
        len,
        digest: Digest::from_hex(q.get("digest")?).ok()?,
    })
}

async fn handle(
    req: Request<Incoming>,
    cache: &Cache,
    token: &Secret,
    limit: Option<&RateLimit>,
    served: &Served,
) -> Response<Body> {
    if !crate::push::bearer_is(&req, token) {
        return reply(StatusCode::UNAUTHORIZED, "this endpoint serves the region's peers only");
    }
    let Some(at) = parse_chunk(&req).filter(|_| req.method() == hyper::Method::GET) else {
        return reply(StatusCode::BAD_REQUEST, "GET /v1/chunks/{file}/{index}?offset=&len=&digest=");
    };
    let c = cache.clone();
    let read = tokio::task::spawn_blocking(move || c.read_chunk(&at)).await.expect("a read does not panic");
    match read {
        Ok(bytes) => {
            if let Some(l) = limit {
                l.take(bytes.len() as u64).await;
            }
            served.chunks.fetch_add(1, Ordering::Relaxed);
            served.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            // The buffer goes back to the pool once the response is sent and nothing else holds it.
            reply(StatusCode::OK, Bytes::from_owner(Shared(bytes)))
        }
        Err(CacheError::NotHeld(_)) => reply(StatusCode::NOT_FOUND, "not held here"),
        Err(e) => {
            tracing::error!(error = %e, "serving a chunk to a peer");
            reply(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// A chunk's bytes as a response body.
struct Shared(Arc<super::buffers::ChunkBytes>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A peer, as a source of chunks.
pub struct PeerSource {
    pub node: NodeId,
    pub addr: String,
    token: Secret,
    agent: ureq::Agent,
    busy: Arc<tokio::sync::Semaphore>,
    limit: Option<Arc<RateLimit>>,
}

#[async_trait]
impl ChunkSource for PeerSource {
    fn name(&self) -> String {
        format!("peer node {} ({})", self.node, self.addr)
    }

    fn is_peer(&self) -> bool {
        true
    }

    async fn chunk(&self, at: &ChunkAt) -> Result<super::buffers::ChunkBytes, FetchError> {
        let _slot = self.busy.acquire().await.expect("never closed");
        let url = format!(
            "http://{}/v1/chunks/{}/{}?offset={}&len={}&digest={}",
            self.addr,
            at.file.hex(),
            at.index,
            at.offset,
            at.len,
            at.digest.hex()
        );
        let (agent, auth, name, at2) =
            (self.agent.clone(), format!("Bearer {}", self.token.expose()), self.name(), *at);
        let bytes = tokio::task::spawn_blocking(move || {
            let failed = |why: String| FetchError::Failed { chunk: at2.digest, source_name: name.clone(), why };
            let mut res = agent.get(&url).header("authorization", auth).call().map_err(|e| failed(e.to_string()))?;
            match res.status().as_u16() {
                200 => super::source::read_body(&mut res, at2.len).map_err(|e| failed(e.to_string())),
                404 => Err(FetchError::Missing { chunk: at2.digest, source_name: name.clone() }),
                s => Err(failed(format!("HTTP {s}"))),
            }
        })
        .await
        .expect("a peer read does not panic")?;
        if let Some(l) = &self.limit {
            l.take(bytes.len() as u64).await;
        }
        Ok(bytes)
    }
}

/// This node in its region's swarm for one app's model: routes each chunk to peers that hold it,
/// else to the origin once per region, and publishes what lands here.
pub struct Swarm {
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub app: String,
    pub region: String,
    pub node: NodeId,
    /// The agent's lease: its holder records and origin claims go with it.
    pub lease: LeaseId,
    /// Where this node's peer endpoint is reached.
    pub addr: String,
    pub token: Secret,
    pub origin: Arc<dyn ChunkSource>,
    /// What this node fetches, in bytes per second over all sources (None: no cap).
    pub fetch_limit: Option<Arc<RateLimit>>,
    state: Mutex<SwarmState>,
    agent: ureq::Agent,
    /// One slot pool per peer node, shared by every chunk asked of it.
    slots: Mutex<HashMap<NodeId, Arc<tokio::sync::Semaphore>>>,
}

#[derive(Default)]
struct SwarmState {
    /// What this node holds, per file, as last published.
    held: HashMap<Digest, BTreeSet<u32>>,
    /// What landed here last, per file (the cache keeps that many in memory: super::RECENT).
    recent: HashMap<Digest, std::collections::VecDeque<u32>>,
    /// Origin fetches this node claimed and has not landed yet.
    claimed: HashSet<(Digest, usize)>,
    /// Peers passed over until then, by source name.
    avoid: HashMap<String, Instant>,
}

impl Swarm {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        keys: Keys,
        app: &str,
        region: &str,
        node: NodeId,
        lease: LeaseId,
        addr: String,
        token: Secret,
        origin: Arc<dyn ChunkSource>,
        fetch_limit: Option<Arc<RateLimit>>,
    ) -> Swarm {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_global(Some(Duration::from_secs(300)))
            .max_idle_connections_per_host(PER_PEER * 2)
            .build()
            .new_agent();
        Swarm {
            store,
            keys,
            app: app.to_string(),
            region: region.to_string(),
            node,
            lease,
            addr,
            token,
            origin,
            fetch_limit,
            state: Mutex::new(SwarmState::default()),
            agent,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn peer(&self, node: NodeId, addr: &str) -> Arc<dyn ChunkSource> {
        let busy = self
            .slots
            .lock()
            .expect("slots")
            .entry(node)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(PER_PEER)))
            .clone();
        Arc::new(PeerSource {
            node,
            addr: addr.to_string(),
            token: self.token.clone(),
            agent: self.agent.clone(),
            busy,
            limit: self.fetch_limit.clone(),
        })
    }

    /// The region's peers holding chunk `at`, in an order that spreads the askers.
    async fn holders(&self, at: &ChunkAt) -> Vec<Arc<dyn ChunkSource>> {
        let Ok((kvs, _)) = self.store.range(&self.keys.holders_of(&self.app, &at.file.hex())).await else {
            return Vec::new();
        };
        let now = Instant::now();
        let avoid = self.state.lock().expect("swarm").avoid.clone();
        // Peers holding it in memory first (no disk read, no second hash there), then spread.
        let mut found: Vec<(bool, u64, NodeId, String)> = kvs
            .iter()
            .filter_map(|kv| {
                let node = fleet_core::keys::id_of(&kv.key)?;
                let h: HolderRecord = kv.json().ok()?;
                let has = h.chunks.binary_search(&(at.index as u32)).is_ok();
                let in_memory = h.recent.contains(&(at.index as u32));
                (node != self.node && has && h.region == self.region).then_some((node, h.addr, in_memory))
            })
            .filter(|(node, addr, _)| {
                avoid.get(&format!("peer node {node} ({addr})")).is_none_or(|until| *until <= now)
            })
            .map(|(node, addr, in_memory)| {
                (!in_memory, spread(node ^ (at.index as u64) ^ self.node.rotate_left(17)), node, addr)
            })
            .collect();
        found.sort();
        found.into_iter().take(PEERS_PER_CHUNK).map(|(_, _, node, addr)| self.peer(node, &addr)).collect()
    }

    async fn publish(&self, file: Digest) {
        let (chunks, recent): (Vec<u32>, Vec<u32>) = {
            let st = self.state.lock().expect("swarm");
            (
                st.held.get(&file).map(|s| s.iter().copied().collect()).unwrap_or_default(),
                st.recent.get(&file).map(|r| r.iter().copied().collect()).unwrap_or_default(),
            )
        };
        let rec = HolderRecord { region: self.region.clone(), addr: self.addr.clone(), chunks, recent };
        let key = self.keys.holder(&self.app, &file.hex(), self.node);
        if let Err(e) = self.store.put(&key, fleet_state::store::to_json(&rec), Some(self.lease)).await {
            tracing::warn!(error = %e, "cannot publish the chunks this node holds");
        }
    }

    async fn unclaim(&self, at: &ChunkAt) {
        let mine = self.state.lock().expect("swarm").claimed.remove(&(at.file, at.index));
        if mine {
            let key = self.keys.origin_fetch(&self.app, &self.region, &at.file.hex(), at.index);
            let _ = self.store.delete(&key).await;
        }
    }
}

/// A 64-bit mix (splitmix64's finaliser): spreads node ids over chunk positions.
fn spread(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[async_trait]
impl Exchange for Swarm {
    async fn route(&self, at: &ChunkAt) -> Route {
        let mut peers = self.holders(at).await;
        if !peers.is_empty() {
            // The origin last: only when every peer holding it fails to serve it.
            peers.push(self.origin.clone());
            return Route::From(peers);
        }
        if self.state.lock().expect("swarm").claimed.contains(&(at.file, at.index)) {
            return Route::From(vec![self.origin.clone()]);
        }
        // No peer holds it: the first node of the region to claim it takes it from the origin.
        let key = self.keys.origin_fetch(&self.app, &self.region, &at.file.hex(), at.index);
        // Claimed already (a read, cheaper than a failing transaction): by another node, wait;
        // by this one (an agent before a restart, its lease still alive), take it.
        if let Ok(Some(kv)) = self.store.get(&key).await {
            if kv.value != self.node.to_string().into_bytes() {
                return Route::Later;
            }
            self.state.lock().expect("swarm").claimed.insert((at.file, at.index));
            return Route::From(vec![self.origin.clone()]);
        }
        let claim = Op::put_with_lease(key.clone(), self.node.to_string().into_bytes(), self.lease);
        match self.store.txn(vec![Compare::absent(key)], vec![claim]).await {
            Ok(r) if r.succeeded => {
                self.state.lock().expect("swarm").claimed.insert((at.file, at.index));
                Route::From(vec![self.origin.clone()])
            }
            Ok(_) => Route::Later,
            // The store is away: the origin still serves (correctness never waits on the store).
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim an origin fetch; fetching anyway");
                Route::From(vec![self.origin.clone()])
            }
        }
    }

    async fn landed(&self, at: &ChunkAt, fetched: bool) {
        {
            let mut st = self.state.lock().expect("swarm");
            st.held.entry(at.file).or_default().insert(at.index as u32);
            if fetched {
                let r = st.recent.entry(at.file).or_default();
                if r.len() >= super::RECENT {
                    r.pop_front();
                }
                r.push_back(at.index as u32);
            }
            // The claim stays in the store (on the lease) once the chunk is here: a node that
            // read no holder a moment ago must not find it free and fetch the chunk again.
            st.claimed.remove(&(at.file, at.index));
        }
        self.publish(at.file).await;
    }

    async fn failed(&self, at: &ChunkAt) {
        self.unclaim(at).await;
    }

    fn strike(&self, s: &Strike) {
        if s.source == self.origin.name() {
            return;
        }
        if s.wrong_bytes {
            tracing::error!(peer = %s.source, "a peer served a chunk with other bytes than its digest: avoided");
        }
        self.state.lock().expect("swarm").avoid.insert(s.source.clone(), Instant::now() + AVOID_FOR);
    }

    fn start(&self, n: usize) -> usize {
        (spread(self.node) % n as u64) as usize
    }

    /// Two per node: the region's nodes together keep 2 × N transfers going, which is plenty,
    /// and each one more in flight is another chunk-sized buffer on every node, the cost that
    /// bound the peers bench (8 nodes: 0.68× the machine's share with two, 0.39× with four).
    fn in_flight(&self) -> usize {
        2
    }
}
