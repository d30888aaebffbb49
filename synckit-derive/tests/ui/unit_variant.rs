use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
enum Light {
    On {
        #[event(aggregate_id)]
        id: String,
    },
    Off,
}

fn main() {}
