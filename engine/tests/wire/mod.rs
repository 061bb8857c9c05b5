//! Hand-built frames for the tests that feed nodes hostile or unusual input.

use hearsay::codec::{FrameConfig, FrameWriter, Message};
use hearsay::placement::NodeId;

/// Encode one frame of cluster `label` from `sender` holding `msgs`.
pub(crate) fn frame(label: &[u8], sender: NodeId, msgs: &[Message<'_>]) -> Vec<u8> {
    let config = FrameConfig::new(label).unwrap();
    let mut buf = Vec::new();
    let mut w = FrameWriter::new(&mut buf, &config, sender, None);
    for m in msgs {
        assert!(w.try_push(m));
    }
    w.finish();
    buf
}
