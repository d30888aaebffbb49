use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(aggregate_id = "user-id")]
enum UserEvent {
    Renamed { user_id: String, name: String },
    Wrapped(Inner),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Inner {
    user_id: String,
}

fn main() {}
