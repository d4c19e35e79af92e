//! The listener's connections are [`Unvectored`], so that HTTP/2 gathers small frames into one
//! write (see `plinth_proto::io`).

use axum::serve::Listener;
use plinth_proto::io::Unvectored;
use std::io;

pub(crate) struct UnvectoredListener<L>(pub(crate) L);

impl<L: Listener> Listener for UnvectoredListener<L> {
    type Io = Unvectored<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (Unvectored(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}
