//! DNS messages as dnsward handles them: a position-recording wire reader ([`wire`]), client
//! queries and the responses dnsward writes itself ([`query`]), and upstream answers checked,
//! stored and re-rendered per client ([`answer`]). hickory-proto is used where whole messages
//! are built or printed (the `query` command, tests).

pub mod answer;
pub mod query;
pub mod wire;

pub use answer::{Answer, AnswerError, check_answer};
pub use query::{
    ClientQuery, Rcode, Rejected, error_response, new_query, read_query, too_large, upstream_query,
};
