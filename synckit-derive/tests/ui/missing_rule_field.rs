use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(aggregate_id = "user_id")]
enum UserEvent {
    Renamed { user_id: String, name: String },
    Moved { id: String },
}

fn main() {}
