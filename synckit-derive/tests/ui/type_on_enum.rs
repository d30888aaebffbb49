use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
#[event(type = "user")]
enum UserEvent {
    Renamed {
        #[event(aggregate_id)]
        id: String,
    },
}

fn main() {}
