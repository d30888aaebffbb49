use synckit::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
struct UserCreated {
    id: String,
}

fn main() {}
