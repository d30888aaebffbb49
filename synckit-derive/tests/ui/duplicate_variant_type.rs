use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
enum UserEvent {
    #[event(type = "user.changed")]
    Renamed {
        #[event(aggregate_id)]
        id: String,
    },
    #[event(type = "user.changed")]
    Moved {
        #[event(aggregate_id)]
        id: String,
    },
}

fn main() {}
