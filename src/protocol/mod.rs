//! The wire formats, as pure encoders and decoders (text in, messages out; messages in,
//! frames out): convoy's native JSON (`/ws`) and Phoenix Channels' serializers. No I/O and
//! nothing above the vocabulary: the sockets in `ws/` drive them.

pub mod gpx;
pub mod native;
pub mod phoenix;
pub mod tracker;
