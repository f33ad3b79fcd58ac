//! Open code points: the one way this project defines a protocol's numbered values (IKEv2
//! payload and notify types, NHRP packet, CIE and error codes, ...).
//!
//! A code point is a newtype over its wire integer with the known values as associated
//! constants, named as IANA (or the RFC) names them. It is open: a value without a name still
//! parses, round-trips and prints (as hex), so a peer's new code never breaks a codec.
//! `Display` prints the name (or the hex value); `Debug` prints the name (or
//! `Type(0x…)`).
//!
//! ```
//! dmvpn_wire::code_point! {
//!     /// An example registry.
//!     Colour(u8) {
//!         /// RFC 0000 §1
//!         RED = 1,
//!         GREEN = 2 => "Green (spelled as the RFC does)",
//!     }
//! }
//! assert_eq!(Colour::RED.to_string(), "RED");
//! assert_eq!(Colour::GREEN.name(), Some("Green (spelled as the RFC does)"));
//! assert_eq!(Colour(9).to_string(), "0x9");
//! assert_eq!(format!("{:?}", Colour(9)), "Colour(0x9)");
//! ```

/// Defines an open code point (see the module documentation). Each value may give the name
/// it prints as (`NAME = 1 => "Printed Name"`); without one it prints its constant's name.
#[macro_export]
macro_rules! code_point {
    ($(#[$m:meta])* $name:ident($ty:ty) {
        $($(#[$cm:meta])* $c:ident = $v:expr $(=> $s:literal)?),* $(,)?
    }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $ty);

        impl $name {
            $($(#[$cm])* pub const $c: Self = Self($v);)*

            /// The registry's name for this value, if this crate knows it.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$c => Some($crate::__code_name!($c $(, $s)?)),)*
                    _ => None,
                }
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                match self.name() {
                    Some(n) => f.write_str(n),
                    None => write!(f, "{:#x}", self.0),
                }
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __code_name {
    ($c:ident) => {
        stringify!($c)
    };
    ($c:ident, $s:literal) => {
        $s
    };
}
