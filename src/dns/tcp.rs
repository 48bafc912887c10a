//! DNS over TCP through hickory-server, which owns connections, framing, pipelining
//! and idle timeouts. Each message it frames is answered by the same parser and
//! resolver as UDP, from its raw bytes, and sent back through hickory's response
//! builder with no size limit. A message hickory-proto cannot decode at all is
//! answered FORMERR by hickory-server itself, before it reaches us.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, MessageType, Metadata, ResponseCode};
use hickory_server::proto::serialize::binary::BinDecoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};
use socket2::{Domain, Protocol, Socket, Type};

use crate::metrics::queries::{Reply, TcpRecorder};
use crate::snapshot::Shared;

use super::encode;
use super::resolve::respond;

/// A connection with no complete query for this long is closed (RFC 7766 section
/// 6.2.3 asks for timeouts of "a few seconds" or more).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per connection before its reader waits for the writer.
pub const RESPONSE_QUEUE: usize = 32;
/// Pending connections the kernel holds for us.
const BACKLOG: i32 = 1024;

/// Binds a listening TCP socket (non-blocking, ready for tokio).
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // A restart must not wait out the TIME_WAIT of the last run's connections.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Answers each framed TCP message from the current snapshot.
#[derive(Debug, Clone)]
pub struct Handler {
    shared: Shared,
    recorder: TcpRecorder,
}

impl Handler {
    /// A handler reading `shared` per message and counting into `recorder`.
    pub fn new(shared: Shared, recorder: TcpRecorder) -> Self {
        Self { shared, recorder }
    }

    async fn answer<R: ResponseHandler>(&self, request: &Request, mut handle: R) -> ResponseInfo {
        let snapshot = self.shared.load_full();
        let mut trace = self.recorder.trace();
        let Some(response) = respond(
            &snapshot,
            request.as_slice(),
            request.src().ip(),
            &mut trace,
        ) else {
            // hickory-server drops what we would (short messages, responses) first.
            return failure_info(request, ResponseCode::NoError);
        };
        // Counted before it is sent, as on UDP.
        self.recorder
            .record(&snapshot, &Reply::of(&response), &trace);
        // The question as received (hickory-server echoes these bytes verbatim, so
        // its case survives); should hickory-proto refuse what our parser took,
        // answer without it rather than not at all.
        let queries = response
            .question
            .as_ref()
            .and_then(|q| Queries::read(&mut BinDecoder::new(q.entry), 1).ok())
            .or_else(|| Queries::read(&mut BinDecoder::new(&[]), 0).ok());
        let Some(queries) = queries else {
            return failure_info(request, ResponseCode::ServFail);
        };
        let edns = response.edns.as_ref().map(encode::edns);
        let message = MessageResponseBuilder::new(&queries, edns.as_ref()).build(
            encode::metadata(&response),
            response.answers.iter(),
            response.authorities.iter(),
            std::iter::empty(),
            response.additionals.iter(),
        );
        match handle.send_response(message).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, src = %request.src(), "TCP response not sent");
                failure_info(request, ResponseCode::ServFail)
            }
        }
    }
}

/// What hickory-server logs for a request that got no regular response.
fn failure_info(request: &Request, rcode: ResponseCode) -> ResponseInfo {
    let mut metadata = Metadata::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    metadata.response_code = rcode;
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

// `RequestHandler` is declared with `#[async_trait]`; this is its expansion, written
// out so Meridian needs no proc-macro crate for one impl.
impl RequestHandler for Handler {
    fn handle_request<'life0, 'life1, 'async_trait, R, T>(
        &'life0 self,
        request: &'life1 Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'async_trait>>
    where
        R: ResponseHandler + 'async_trait,
        T: Time + 'async_trait,
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.answer(request, response_handle))
    }
}
