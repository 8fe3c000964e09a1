from tollway.edge.app import main

main()
