//! The states of the things operators configure: webhook endpoints, sending domains and their
//! DKIM keys. Each is stored and shown as its snake_case name.

/// An enum stored and shown as text: `as_str`, `parse` (of what `as_str` wrote), `Display`
/// and `Serialize` from one list of `Variant => "name"`.
macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

text_enum! {
    /// Whether an endpoint is sent events.
    EndpointStatus {
        Enabled => "enabled",
        /// Turned off by its owner.
        Disabled => "disabled",
        /// Turned off by Herald: it answered 410 Gone, or kept failing past the schedule.
        AutoDisabled => "auto_disabled",
    }
}

text_enum! {
    /// What the last DNS check of a sending domain found.
    DomainStatus {
        /// Not checked yet, or its records not all seen yet.
        Pending => "pending",
        Verified => "verified",
        /// Some records are right, some not.
        PartiallyVerified => "partially_verified",
        /// Checked for long enough without the records appearing.
        Failed => "failed",
    }
}

text_enum! {
    /// Where a DKIM key is in its life.
    KeyState {
        /// Signs.
        Active => "active",
        /// A rotation's new key, waiting for its record to be published.
        Pending => "pending",
        Retired => "retired",
    }
}

text_enum! {
    /// What an operator of the console may do across Herald.
    OperatorRole {
        /// Every project, and the projects themselves.
        Admin => "admin",
        /// The projects granted to it, each as owner or viewer.
        Member => "member",
    }
}

text_enum! {
    /// What a member operator may do in one project.
    ProjectRole {
        /// Reads and changes.
        Owner => "owner",
        /// Reads only.
        Viewer => "viewer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_parses_back_from_its_name() {
        for s in EndpointStatus::ALL {
            assert_eq!(EndpointStatus::parse(s.as_str()), Some(*s));
        }
        for s in DomainStatus::ALL {
            assert_eq!(DomainStatus::parse(s.as_str()), Some(*s));
        }
        for s in KeyState::ALL {
            assert_eq!(KeyState::parse(s.as_str()), Some(*s));
        }
        assert_eq!(DomainStatus::parse("Verified"), None);
    }
}
